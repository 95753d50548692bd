"""Models: per model of the catalogue, its champion, the registered versions compared, the validation plot."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import ui
from platform_assets.ml.config import METRICS

st.title("Models")
st.caption("From the MLflow registry (through the platform's MLflow resource): the version each model's "
           "`champion` alias points to, every registered version's validation metric, and the champion run's "
           "`validation_plot.png` artifact (a confusion matrix with class names for classifiers, residuals for "
           "regressors).")
st.sidebar.caption("The site, machine and time filters apply on the Predictions and Streaming pages.")

overview = ui.load("models_overview")
if not ui.guidance(overview):
    for model in overview.frame.itertuples(index=False):
        st.header(model.model, divider="gray")
        metric = model.selection_metric
        val, test = dict(model.validation), dict(model.test)
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Champion version", model.champion_version)
        c2.metric("Algorithm", model.algorithm or "?")
        c3.metric(f"Validation {metric}", f"{val[metric]:.3f}" if metric in val else "n/a")
        c4.metric(f"Test {metric}", f"{test[metric]:.3f}" if metric in test else "n/a")
        st.caption(f"Registered as `{model.registered_name}` · {model.task} · run `{model.run_id}`")

        left, right = st.columns([3, 2])
        with left:
            versions = ui.load("model_versions", model.model)
            st.subheader("Versions compared")
            if not ui.guidance(versions):
                frame = versions.frame.dropna(subset=["value"]).assign(
                    role=lambda f: f["champion"].map({True: "champion", False: "candidate"}))
                chart = (
                    alt.Chart(frame).mark_bar()
                    .encode(x=alt.X("version:O", title="registered version"),
                            y=alt.Y("value:Q", title=f"validation {metric}"),
                            color=alt.Color("algorithm:N", title="algorithm"),
                            opacity=alt.condition(alt.datum.champion, alt.value(1.0), alt.value(0.45)),
                            stroke=alt.condition(alt.datum.champion, alt.value("black"), alt.value(None)),
                            tooltip=["version", "algorithm", alt.Tooltip("value:Q", format=".4f"), "role"])
                    .properties(height=300)
                )
                st.altair_chart(chart, width="stretch")
                st.caption("Full opacity with an outline: the champion. "
                           + ("Higher is better." if METRICS[model.task].get(metric, True) else "Lower is better."))
            st.subheader("Champion metrics")
            names = sorted(set(val) | set(test))
            st.dataframe(pd.DataFrame({"metric": names, "validation": [val.get(n) for n in names],
                                       "test": [test.get(n) for n in names]}),
                         hide_index=True, width="stretch")
        with right:
            st.subheader("Confusion matrix" if model.task == "classification" else "Validation plot")
            png = ui.load_slow("validation_plot", model.run_id) if model.run_id else None
            if png:
                st.image(png, caption=f"{model.model} v{model.champion_version} ({model.algorithm}): "
                                      "validation_plot.png from the champion's MLflow run")
            else:
                st.info("The champion's run has no validation_plot.png artifact.", icon=":material/info:")
