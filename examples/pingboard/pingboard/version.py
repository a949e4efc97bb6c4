"""The release shown in the page footer."""

VERSION = "A"
