"""Predictions: the champion classifier's predicted failure probability over the latest feature rows."""

import altair as alt
import streamlit as st

from dashboards import ui

st.title("Predictions")
flt = ui.sidebar_filters(default_range="Last 3 days",
                         time_help="Feature rows in this many hours before the newest row of the feature set.")
st.subheader("Served by the prediction service")
served = ui.load("served_predictions")
if not ui.guidance(served):
    log = served.frame
    c1, c2, c3 = st.columns(3)
    c1.metric("Predictions served", f"{int(log['predictions'].sum()):,}")
    c2.metric("Models", log["model"].nunique())
    c3.metric("Last served", f"{log['minute'].max():%Y-%m-%d %H:%M} UTC")
    st.altair_chart(
        alt.Chart(log).mark_bar().encode(x=alt.X("minute:T", title="minute"), y=alt.Y("sum(predictions):Q", title="predictions"),
                                          color="model:N", tooltip=["minute:T", "model:N", "version:N", "predictions:Q",
                                                                     "mean_probability:Q"]),
        use_container_width=True)
    st.caption("From `serving.predictions`, the service's log of every prediction (written off the request path).")

st.subheader("The champion over the latest features")
st.info(
    "This section scores the latest rows of the lake feature set (`lake/features/machine_hourly`) with the "
    "classifier the registry's `champion` alias points to (`models:/<model>@champion`, the model the service "
    "serves): the predicted probability of a failure within 24 hours, per machine and hour.",
    icon=":material/science:",
)

scored = ui.load_slow("champion_predictions", flt.hours)
if not ui.guidance(scored):
    frame = scored.frame
    if flt.machines is not None:
        frame = frame[frame["machine_id"].isin(flt.machines)]
    if frame.empty:
        st.info("No feature rows for this site or machine in the selected range.", icon=":material/info:")
        st.stop()
    first = frame.iloc[0]
    st.caption(f"Model `{first.model}` version {first.version} · {len(frame):,} feature rows · "
               f"{frame['as_of'].min():%Y-%m-%d %H:%M} – {frame['as_of'].max():%Y-%m-%d %H:%M} UTC")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Rows scored", f"{len(frame):,}")
    c2.metric("Machines", frame["machine_id"].nunique())
    c3.metric("Mean probability", f"{frame['probability'].mean():.3f}")
    c4.metric("Rows ≥ 0.5", f"{(frame['probability'] >= 0.5).mean():.1%}")

    left, right = st.columns(2)
    with left:
        st.subheader("Distribution")
        st.altair_chart(
            alt.Chart(frame).mark_bar()
            .encode(x=alt.X("probability:Q", bin=alt.Bin(maxbins=20), title="predicted failure probability"),
                    y=alt.Y("count():Q", title="feature rows"), color=alt.Color("site_name:N", title="site"),
                    tooltip=["site_name:N", "count():Q"])
            .properties(height=300),
            width="stretch",
        )
    with right:
        st.subheader("Per site")
        st.altair_chart(
            alt.Chart(frame).mark_boxplot(extent="min-max")
            .encode(x=alt.X("site_name:N", title=None), y=alt.Y("probability:Q", title="predicted probability"),
                    color=alt.Color("site_name:N", legend=None))
            .properties(height=300),
            width="stretch",
        )
    st.subheader("Over time")
    hourly = (frame.groupby(["as_of", "site_name"], as_index=False)["probability"].mean())
    st.altair_chart(
        alt.Chart(hourly).mark_line()
        .encode(x=alt.X("as_of:T", title="feature time (as_of, UTC)"),
                y=alt.Y("probability:Q", title="mean predicted probability"),
                color=alt.Color("site_name:N", title="site"),
                tooltip=["as_of:T", "site_name:N", alt.Tooltip("probability:Q", format=".3f")])
        .properties(height=280),
        width="stretch",
    )
    st.subheader("Highest risk at the latest hour")
    latest = frame[frame["as_of"] == frame["as_of"].max()].nlargest(10, "probability")
    st.dataframe(latest[["machine_id", "site_name", "as_of", "probability"]], hide_index=True, width="stretch",
                 column_config={"probability": st.column_config.ProgressColumn("probability", min_value=0.0,
                                                                                max_value=1.0, format="%.3f")})
