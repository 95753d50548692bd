"""Streaming: live scores, events per minute, consumer lag, dead letters and alerts."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, ui

LIVE_TTL_SECONDS = 5  # live scores: a few seconds old at most (the other sections cache for a minute)


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def live_scores(settings: tuple, since, machine_ids) -> data.Loaded:
    """Each machine's latest prediction on the stream and the scores since ``since``
    (``streaming.predictions``: model version and source offset per score)."""
    where = "recorded_at >= %s" + (" AND key = ANY(%s)" if machine_ids else "")
    params = ((since if since is not None else pd.Timestamp(0, tz="UTC")).to_pydatetime(),
              *([list(machine_ids)] if machine_ids else []))
    return data._streaming_query(
        "SELECT key AS machine_id, event_time, score, alert, threshold, model, model_version, topic, partition, "
        "\"offset\", features_updated_at, recorded_at, "
        "extract(epoch FROM clock_timestamp() - features_updated_at) AS features_age_s "
        f"FROM {data._s('streaming')}.predictions WHERE {where} ORDER BY recorded_at DESC LIMIT 5000",
        params, ["machine_id", "event_time", "score", "alert", "threshold", "model", "model_version", "topic",
                 "partition", "offset", "features_updated_at", "recorded_at", "features_age_s"], "predictions")

st.title("Streaming")
st.caption("From the warehouse's `streaming` schema (written by each stream's batches, in either mode) and Kafka's watermarks. "
           "Site and machine filter the windowed readings and the alerts; the time range counts back from the "
           "newest streaming record.")
flt = ui.sidebar_filters(default_range="Last 6 hours")
latest = ui.load("streaming_latest")
since = flt.since(latest)
machines = list(flt.machines) if flt.machines is not None else None

st.subheader("Live scores")
st.caption("The champion's score of each machine's online features, computed from the stream as its readings "
           "land (`streaming.predictions`, refreshed every few seconds). A score above the threshold is an alert "
           "(signal `model:<model>` under Alerts). Each score names its model version and source offset.")
if st.button("Refresh", icon=":material/refresh:"):
    live_scores.clear()
scores = live_scores(data.settings_key(), since, tuple(machines) if machines else None)
if not ui.guidance(scores):
    frame = scores.frame
    latest_scores = frame.sort_values("recorded_at").groupby("machine_id").tail(1).sort_values("score", ascending=False)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Machines scored", len(latest_scores))
    c2.metric("Above threshold now", int(latest_scores["alert"].sum()))
    c3.metric("Model version", ", ".join(sorted(latest_scores["model_version"].astype(str).unique())))
    c4.metric("Newest features", f"{latest_scores['features_age_s'].min():.1f} s old")
    st.dataframe(latest_scores[["machine_id", "score", "alert", "event_time", "model_version", "features_age_s",
                                "topic", "partition", "offset"]],
                 hide_index=True, width="stretch",
                 column_config={"score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0,
                                                                         format="%.3f")})
    st.altair_chart(
        alt.Chart(frame).mark_line(point=True)
        .encode(x=alt.X("event_time:T", title="event time (UTC)"), y=alt.Y("score:Q", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("machine_id:N"), tooltip=["machine_id:N", "event_time:T", "score:Q", "model_version:N"])
        .properties(height=240),
        width="stretch",
    )

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
