"""Architecture search: ``stnas`` (ST-NAS differentiable search), ``cells`` (dynamic-cell search with an LSTM
controller and PPO), ``latency`` (latency tables, one measuring policy), ``plots`` (figures both share).

Search code imports ``vidnas.engine`` and ``vidnas.models``; neither imports search (tested). Import what you need
from the sub-packages, e.g. ``from vidnas.search.stnas import search_stnas``.
"""
