"""The Streamlit dashboard (issue 7): `streamlit run dashboards/app.py`."""
