"""Experiments: whole jobs built on the searches and the engine (the layer just below the CLI).

* ``candidates``: the resumable stages (baseline, search + final training, interleaved benchmark);
* ``sweep``: the ST-NAS lambda sweep and its Pareto plot (`vidnas search stnas --lambdas`);
* ``demo``: the demo pipeline (`vidnas demo`);
* ``benchmark``: several models of any kind timed side by side by the ST-NAS protocol (`vidnas bench`).

Nothing below this layer imports it (tested): ``cli -> experiments -> search -> engine -> models``.
"""
