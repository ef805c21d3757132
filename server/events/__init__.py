"""Fan-out of live-stream events (onsets, status) to subscribers, behind the :class:`EventHub` interface."""
