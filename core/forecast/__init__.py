"""Forecasters: the interface every forecaster implements, and the baseline shipped with it."""

from core.forecast.base import Forecast, Forecaster, MinuteHistory

__all__ = ["Forecast", "Forecaster", "MinuteHistory"]
