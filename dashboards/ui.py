"""What the pages share: cached loading, the sidebar filters and the empty-platform guidance."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboards import data

TTL_SECONDS = 60  # warehouse and registry queries
TTL_SLOW_SECONDS = 300  # scoring the feature set with the champion, downloading artifacts

TIME_RANGES = {"Last hour": 1, "Last 6 hours": 6, "Last 24 hours": 24, "Last 3 days": 72, "Last 7 days": 168,
               "All": None}
ALL_SITES, ALL_MACHINES = "All sites", "All machines"


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _load(name: str, settings: tuple, args: tuple) -> data.Loaded:
    return getattr(data, name)(*args)


@st.cache_data(ttl=TTL_SLOW_SECONDS, show_spinner="Loading…")
def _load_slow(name: str, settings: tuple, args: tuple):
    return getattr(data, name)(*args)


def load(name: str, *args) -> data.Loaded:
    """``data.<name>(*args)``, cached per platform settings for ``TTL_SECONDS``."""
    return _load(name, data.settings_key(), args)


def load_slow(name: str, *args):
    return _load_slow(name, data.settings_key(), args)


def guidance(loaded: data.Loaded) -> bool:
    """Show why a frame is empty; True when there is nothing to draw."""
    if loaded.empty:
        st.info(loaded.reason or data.EMPTY_HINT, icon=":material/info:")
        return True
    return False


@dataclass(frozen=True)
class Filters:
    site: str | None  # site_id, None for all
    machines: tuple[str, ...] | None  # None for all machines
    hours: int | None  # None for the whole range

    def since(self, latest: pd.Timestamp | None) -> pd.Timestamp | None:
        if self.hours is None or latest is None:
            return None
        return latest - pd.Timedelta(hours=self.hours)


def sidebar_filters(*, sites: bool = True, machines: bool = True, time_range: bool = True,
                    default_range: str = "All", time_help: str | None = None) -> Filters:
    """Site, machine and time-range filters in the sidebar (the ones a page uses)."""
    fleet = load("machines").frame
    st.sidebar.header("Filters")
    site = None
    chosen: tuple[str, ...] | None = None
    if sites:
        labels = {ALL_SITES: None}
        if not fleet.empty:
            for s in fleet[["site_id", "site_name"]].drop_duplicates().itertuples(index=False):
                labels[f"{s.site_name} ({s.site_id})"] = s.site_id
        site = labels[st.sidebar.selectbox("Site", list(labels), key="filter_site")]
        if site is not None:
            chosen = tuple(fleet.loc[fleet["site_id"] == site, "machine_id"])
    if machines:
        pool = fleet if site is None else fleet[fleet["site_id"] == site]
        options = [ALL_MACHINES, *(pool["machine_id"].tolist() if not pool.empty else [])]
        machine = st.sidebar.selectbox("Machine", options, key="filter_machine")
        if machine != ALL_MACHINES:
            chosen = (machine,)
    hours = None
    if time_range:
        names = list(TIME_RANGES)
        label = st.sidebar.selectbox("Time range", names, index=names.index(default_range), key="filter_range",
                                     help=time_help or "Counted back from the newest data, not the wall clock.")
        hours = TIME_RANGES[label]
    return Filters(site=site, machines=chosen, hours=hours)


def sidebar_footer() -> None:
    import os

    st.sidebar.divider()
    if st.sidebar.button("Refresh data", icon=":material/refresh:"):
        st.cache_data.clear()
    data.load_local_defaults()
    st.sidebar.caption(
        f"Warehouse `{os.environ.get('WAREHOUSE_HOST')}:{os.environ.get('WAREHOUSE_PORT')}/"
        f"{os.environ.get('WAREHOUSE_DB')}` · MLflow `{os.environ.get('MLFLOW_TRACKING_URI')}` · "
        f"Dagster UI [{data.dagster_ui_url()}]({data.dagster_ui_url()}) · cached {TTL_SECONDS} s"
    )
