"""The release of the demo project, shown in the page footer and by /healthz (version B of the
deploy checks: a visible change and a new migration)."""

VERSION = "2.0-B"
