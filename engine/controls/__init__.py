"""The operator's controls, as pure rules over the config and what Redis holds: maintenance,
pauses, holiday calendars, and the token bucket every rate limit is made of."""
