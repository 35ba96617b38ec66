"""The Flink jobs and the services around them (loader, replay, dashboard, demo) behind the `metering` command line."""
