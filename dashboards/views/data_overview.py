"""Data overview: every warehouse table (marts and quarantine) and the quarantined rows per source."""

import altair as alt
import streamlit as st

from dashboards import ui

st.title("Data overview")
st.caption("Warehouse tables (PostgreSQL, schemas `marts` and `quarantine`), read live through the platform's "
           "warehouse resource. Each table is a Dagster asset: the link opens it in the Dagster UI.")

tables = ui.load("warehouse_tables")
if not ui.guidance(tables):
    frame = tables.frame
    marts = frame[frame["schema"] == "marts"]
    quarantine = frame[frame["schema"] == "quarantine"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Warehouse tables", len(frame))
    c2.metric("Rows in marts", f"{int(marts['rows'].sum()):,}")
    c3.metric("Quarantined rows", f"{int(quarantine['rows'].sum()):,}")
    latest = frame["latest_date"].dropna()
    c4.metric("Latest partition", str(latest.max()) if not latest.empty else "n/a")

    st.subheader("Tables")
    st.dataframe(
        frame[["schema", "table", "rows", "latest_date", "dagster_ui"]], hide_index=True, width="stretch",
        column_config={
            "rows": st.column_config.NumberColumn("rows", format="%d"),
            "latest_date": st.column_config.DateColumn("latest partition"),
            "dagster_ui": st.column_config.LinkColumn("asset in Dagster", display_text=r".*/assets/(.*)"),
        },
    )
    chart = (
        alt.Chart(frame).mark_bar()
        .encode(x=alt.X("rows:Q", title="rows"), y=alt.Y("table:N", sort="-x", title=None),
                color=alt.Color("schema:N", title="schema"),
                tooltip=["schema", "table", "rows", "latest_date"])
        .properties(height=alt.Step(22))
    )
    st.altair_chart(chart, width="stretch")

st.subheader("Quarantine")
st.caption("Records that broke their source's contract, kept with the reason (`quarantine.<source>`).")
summary = ui.load("quarantine_summary")
if not ui.guidance(summary):
    st.dataframe(
        summary.frame, hide_index=True, width="stretch",
        column_config={
            "rows": st.column_config.NumberColumn("bad rows", format="%d"),
            "latest_date": st.column_config.DateColumn("latest partition"),
            "top_reasons": st.column_config.TextColumn("top reasons (rows)", width="large"),
            "dagster_ui": st.column_config.LinkColumn("asset in Dagster", display_text=r".*/assets/(.*)"),
        },
    )
    reasons = ui.load("quarantine_reasons")
    if not ui.guidance(reasons):
        sources = summary.frame.sort_values("rows", ascending=False)["source"].tolist()
        source = st.selectbox("Reasons of source", sources)
        picked = reasons.frame[reasons.frame["source"] == source].nlargest(10, "rows")
        st.altair_chart(
            alt.Chart(picked).mark_bar()
            .encode(x=alt.X("rows:Q", title="bad rows"), y=alt.Y("reason:N", sort="-x", title=None,
                                                                   axis=alt.Axis(labelLimit=420)),
                    tooltip=["reason", "rows"])
            .properties(height=alt.Step(22), title=f"Top reasons: quarantine.{source}"),
            width="stretch",
        )

st.sidebar.caption("The site, machine and time filters apply on the Predictions and Streaming pages.")
