"""Audience sources pulled on a schedule: the refresher (leases, outcomes) and the
readers of each source kind (`readers.source_readers`)."""
