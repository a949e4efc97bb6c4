"""The release of the demo project, shown in the page footer and by /healthz."""

VERSION = "1.0"
