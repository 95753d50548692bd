"""The platform's dashboard: ``streamlit run dashboards/app.py``.

Reads the warehouse, the lake, the MLflow registry and Kafka through the platform's own resources
(``resources.build_resources``), with the same settings as everything else (deploy/local/services.env
locally, the environment in PROD). Pages live in ``dashboards/views`` (not ``pages/``, which Streamlit
would also serve as old-style pages, bypassing this entry point); data access in ``dashboards/data.py``.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts only the script's folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st

from dashboards import ui

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="ML platform dashboard", page_icon=":material/monitoring:", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "data_overview.py", title="Data overview", icon=":material/table_chart:",
            url_path="data_overview", default=True),
    st.Page(HERE / "views" / "models.py", title="Models", icon=":material/model_training:", url_path="models"),
    st.Page(HERE / "views" / "predictions.py", title="Predictions", icon=":material/query_stats:",
            url_path="predictions"),
    st.Page(HERE / "views" / "streaming.py", title="Streaming", icon=":material/stream:", url_path="streaming"),
]

page = st.navigation(PAGES)
page.run()
ui.sidebar_footer()
