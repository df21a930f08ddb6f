"""Battery and EV dispatch under demand charges: assets, the planner, the live layer, replay."""
