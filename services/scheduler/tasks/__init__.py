"""Tasks: what goes where and when. `schedules` (cron and intervals, by APScheduler),
`model`, `rules` (validation and the calls), `store` (the only SQL), `server` (gRPC) and
`runner` (the loop that reserves due deliveries and asks the delivery service to run them)."""
