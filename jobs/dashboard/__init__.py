"""The local web dashboard (``metering dashboard``): usage so far, series, finals and pipeline health."""
