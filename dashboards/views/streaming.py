"""Streaming: events per minute, consumer lag, dead letters and alerts."""

import altair as alt
import streamlit as st

from dashboards import ui

st.title("Streaming")
st.caption("From the warehouse's `streaming` schema (written by the micro-batch runs) and Kafka's watermarks. "
           "Site and machine filter the windowed readings and the alerts; the time range counts back from the "
           "newest streaming record.")
flt = ui.sidebar_filters(default_range="Last 6 hours")
latest = ui.load("streaming_latest")
since = flt.since(latest)
machines = list(flt.machines) if flt.machines is not None else None

st.subheader("Events per minute")
events = ui.load("events_per_minute", since, machines)
batches = ui.load("batches_per_minute", since)
if events.empty and batches.empty:
    ui.guidance(events)
else:
    left, right = st.columns(2)
    with left:
        st.caption("Valid readings per one-minute event-time window (`streaming.sensor_readings_minute_stats`).")
        if not ui.guidance(events):
            st.altair_chart(
                alt.Chart(events.frame).mark_bar()
                .encode(x=alt.X("minute:T", title="window start (UTC)"), y=alt.Y("events:Q", title="readings"),
                        tooltip=["minute:T", "events:Q", "machines:Q"])
                .properties(height=260),
                width="stretch",
            )
    with right:
        st.caption("Messages recorded per minute by the micro-batch runs, per stream (`streaming.batches`).")
        if not ui.guidance(batches):
            st.altair_chart(
                alt.Chart(batches.frame).mark_bar()
                .encode(x=alt.X("minute:T", title="recorded (UTC)"), y=alt.Y("valid:Q", title="valid messages"),
                        color=alt.Color("stream:N"),
                        tooltip=["minute:T", "stream:N", "valid:Q", "dead_letters:Q", "runs:Q"])
                .properties(height=260),
                width="stretch",
            )

st.subheader("Consumer lag")
lag = ui.load("consumer_lag")
if not ui.guidance(lag):
    totals = lag.frame.groupby("stream", as_index=False)["lag"].sum()
    cols = st.columns(max(len(totals), 1))
    for col, row in zip(cols, totals.itertuples(index=False)):
        col.metric(f"{row.stream} lag (messages)", f"{int(row.lag):,}")
    st.caption("Lag = the topic's high watermark minus the last durable offset (`streaming.batches`), per partition, "
               "read when the page loads (cached for a minute).")
    st.dataframe(lag.frame, hide_index=True, width="stretch")

st.subheader("Dead letters")
dead = ui.load("dead_letters", since)
if not ui.guidance(dead):
    frame = dead.frame
    st.altair_chart(
        alt.Chart(frame).mark_bar()
        .encode(x=alt.X("minute:T", title="recorded (UTC)"), y=alt.Y("sum(messages):Q", title="dead letters"),
                color=alt.Color("stream:N"), tooltip=["minute:T", "stream:N", "sum(messages):Q"])
        .properties(height=220),
        width="stretch",
    )
    reasons = (frame.groupby(["stream", "reason"], as_index=False)["messages"].sum()
               .sort_values("messages", ascending=False).head(15))
    st.dataframe(reasons, hide_index=True, width="stretch",
                 column_config={"reason": st.column_config.TextColumn("reason", width="large")})

st.subheader("Alerts")
alerts = ui.load("alerts", since, machines)
if not ui.guidance(alerts):
    frame = alerts.frame
    c1, c2, c3 = st.columns(3)
    c1.metric("Alerts", len(frame))
    c2.metric("Machines alerted", frame["key"].nunique())
    c3.metric("Max |z|", f"{frame['zscore'].abs().max():.1f}")
    st.altair_chart(
        alt.Chart(frame).mark_bar()
        .encode(x=alt.X("yearmonthdatehoursminutes(event_time):T", title="event time (UTC, per minute)"),
                y=alt.Y("count():Q", title="alerts"), color=alt.Color("signal:N"),
                tooltip=["yearmonthdatehoursminutes(event_time):T", "signal:N", "count():Q"])
        .properties(height=220),
        width="stretch",
    )
    st.dataframe(frame.sort_values("event_time", ascending=False).head(50), hide_index=True, width="stretch")
