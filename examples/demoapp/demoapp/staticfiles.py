"""Static files storage whose manifest belongs to one release.

Releases share one STATIC_ROOT (nginx serves it, and pages still open from the previous release
keep finding their hashed files there), so collectstatic of a new release must not replace the
manifest the release being served reads: a worker of the old release that starts between
collectstatic and the switch (or after a failed deploy) would otherwise map names through the
new release's manifest. Each release reads and writes staticfiles-<release directory>.json.
"""

from pathlib import Path

from django.contrib.staticfiles.storage import ManifestStaticFilesStorage

RELEASE = Path(__file__).resolve().parent.parent.name


class ReleaseManifestStaticFilesStorage(ManifestStaticFilesStorage):
    manifest_name = f"staticfiles-{RELEASE}.json"
