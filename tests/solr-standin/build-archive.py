#!/usr/bin/env python3
"""Builds the Solr STAND-IN archive: solr-VERSION-standin.tgz, laid out like Apache Solr's solr-VERSION.tgz.

    tests/solr-standin/build-archive.py [--version 9.7.0] [--output-dir DIR]

Writes DIR/solr-VERSION-standin.tgz and DIR/solr-VERSION-standin.tgz.sha512 (`<hex>  <file name>`, as
Apache's .sha512 files), and prints the archive's path and its SHA-512. DIR defaults to
.cache/solr-standin/ at the top of the project. The archive is reproducible: entries sorted, fixed
modification times, owner root, gzip header without time or name, so the same sources give the same bytes.

The stand-in is NOT Apache Solr (see archive/STANDIN.md); nothing installs it unless a test asks for it.
"""

import argparse
import gzip
import hashlib
import io
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "archive"
DEFAULT_OUTPUT = HERE.parents[1] / ".cache" / "solr-standin"
MTIME = 1704067200  # 2024-01-01T00:00:00Z for every entry
EXECUTABLE = {"bin/solr", "server/standin/solr_standin.py"}
# The resource files of Apache Solr 9's _default configset (conf/lang/): schemas such as haystack's name them,
# and Solr refuses a schema whose resources are missing. Here they are placeholders.
LANG = ["contractions_ca.txt", "contractions_fr.txt", "contractions_ga.txt", "contractions_it.txt",
        "hyphenations_ga.txt", "stemdict_nl.txt", "stoptags_ja.txt", "userdict_ja.txt"] + [
    f"stopwords_{lang}.txt" for lang in (
        "ar bg ca cz da de el en es et eu fa fi fr ga gl hi hu hy id it ja lv nl no pt ro ru sv th tr").split()]
PLACEHOLDER = "# Solr STAND-IN placeholder for Apache Solr's {what} (the stand-in does not use its content).\n"


def contents(version):
    """Archive path (below the top directory) -> bytes."""
    files = {}
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[path.relative_to(SOURCE).as_posix()] = path.read_bytes()
    files["server/standin/VERSION"] = f"{version}\n".encode()
    files["server/start.jar"] = PLACEHOLDER.format(what="Jetty start.jar: there is no Java code").encode()
    for name in LANG:
        files[f"server/solr/configsets/_default/conf/lang/{name}"] = PLACEHOLDER.format(what=f"lang/{name}").encode()
    return files


def build(version, output_dir):
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SystemExit(f"build-archive: the version must look like 9.7.0, not {version!r}")
    top = f"solr-{version}"
    files = contents(version)
    dirs = {"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)}
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in [""] + sorted(dirs | set(files)):
            info = tarfile.TarInfo(f"{top}/{name}".rstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
            if name in files:
                info.size, info.mode = len(files[name]), 0o755 if name in EXECUTABLE else 0o644
                tar.addfile(info, io.BytesIO(files[name]))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = output_dir / f"{top}-standin.tgz"
    gz_bytes = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_bytes, compresslevel=9, mtime=0) as gz:
        gz.write(tar_bytes.getvalue())
    archive.write_bytes(gz_bytes.getvalue())
    digest = hashlib.sha512(gz_bytes.getvalue()).hexdigest()
    Path(f"{archive}.sha512").write_text(f"{digest}  {archive.name}\n")
    return archive, digest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="9.7.0", help="the Solr version it imitates (default 9.7.0)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help=f"default {DEFAULT_OUTPUT}")
    args = parser.parse_args(argv)
    archive, digest = build(args.version, args.output_dir.resolve())
    print(archive)
    print(f"sha512: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
