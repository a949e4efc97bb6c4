#!/usr/bin/env python3
"""Solr STAND-IN: a small test double for Apache Solr 9. It is NOT Apache Solr.

It exists so that the `solr` role and the haystack integration can be tested on machines that
cannot download Solr. It implements the part of bin/solr and of Solr's HTTP API that the role
and django-haystack (through pysolr) use, answers in Solr's JSON shapes, fails the way Solr 9
fails on what matters for an installer (classes Solr 9 no longer ships, missing resource files,
unknown fields, ...), and answers HTTP 400 "not implemented" for everything else.
See ../../STANDIN.md. Python 3 standard library only (it runs under Debian's /usr/bin/python3).

Commands (bin/solr calls them after reading the include file):
  cli ARGS...   the bin/solr command line: start [-f], stop, status, version
  serve -D...   the server itself (what `bin/solr start -f` ends up exec-ing)
"""

import copy
import datetime
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TIP = Path(__file__).resolve().parents[2]  # solr-<version>/
VERSION = (Path(__file__).parent / "VERSION").read_text().strip()
LUCENE = {"9.7.0": "9.11.1"}.get(VERSION, "unknown")
NOTICE = "NOT Apache Solr: a test stand-in implementing a small subset of Solr 9 (see STANDIN.md)"


# --- errors and logging ------------------------------------------------------------------------

class SolrError(Exception):
    """An error answered like Solr: HTTP `code` and {"error": {"msg": ..., "code": ...}}."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code, self.msg = code, msg


def bad(msg):
    return SolrError(400, msg)


def not_implemented(what):
    return SolrError(400, f"The Solr stand-in does not implement {what} (this is a test double, "
                          f"not Apache Solr; see STANDIN.md)")


class Log:
    """Solr-like log lines, on stdout (journald) and in SOLR_LOGS_DIR/solr.log."""

    def __init__(self):
        self.file, self.lock, self.warned = None, threading.Lock(), set()

    def __call__(self, level, msg, core=None, src="o.a.s.standin"):
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        line = f"{stamp} {level:<5} ({threading.current_thread().name}) [{'   x:' + core if core else '   '}] {src} {msg}"
        with self.lock:
            print(line, flush=True)
            if self.file:
                self.file.write(line + "\n")
                self.file.flush()

    def once(self, key, msg, core=None):
        if key not in self.warned:
            self.warned.add(key)
            self("WARN", msg, core)


log = Log()
PROPS = {}  # "system properties": -Dkey=value from bin/solr and SOLR_OPTS


def subst(text):
    """${name:default} in solr.xml and solrconfig.xml, as Solr substitutes system properties."""
    def one(m):
        name, _, default = m.group(1).partition(":")
        if name in PROPS:
            return PROPS[name]
        if m.group(1).find(":") < 0:
            raise SolrError(500, f"No system property or default value specified for {name} value:{m.group(0)}")
        return default
    return re.sub(r"\$\{([^}]*)\}", one, text or "")


def parse_xml(path, what):
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise SolrError(500, f"Can't find resource '{Path(path).name}' in classpath or '{Path(path).parent}'")
    except ET.ParseError as exc:
        raise SolrError(500, f"Error parsing {what} {path}: {exc}")


# --- schema -------------------------------------------------------------------------------------

# Field type classes that exist in Solr 9.x (org.apache.solr.schema); anything else fails to load,
# as in Solr: e.g. solr.LatLonType, GeoHashField, SpatialPointVectorFieldType (removed in 9.0),
# the pre-Trie IntField/SortableIntField family (removed in 5.0).
KINDS = {
    "TextField": "text", "SortableTextField": "text", "StrField": "str", "UUIDField": "str",
    "EnumFieldType": "str", "EnumField": "str", "CollationField": "str", "NestPathField": "str",
    "BoolField": "bool",
    "IntPointField": "int", "LongPointField": "int", "TrieIntField": "int", "TrieLongField": "int",
    "FloatPointField": "float", "DoublePointField": "float", "TrieFloatField": "float", "TrieDoubleField": "float",
    "DatePointField": "date", "TrieDateField": "date",
}
OPAQUE = {  # loaded, stored and returned; matched as plain strings only
    "BBoxField", "BinaryField", "CurrencyField", "CurrencyFieldType", "DateRangeField", "DenseVectorField",
    "ExternalFileField", "LatLonPointSpatialField", "PointType", "PreAnalyzedField", "RandomSortField", "RankField",
    "RptWithGeometrySpatialField", "SpatialRecursivePrefixTreeFieldType", "TrieField",
}
DEPRECATED = {  # still in Solr 9, removed in Solr 10: Solr 9 logs a warning, so does the stand-in
    "TrieIntField": "IntPointField", "TrieLongField": "LongPointField", "TrieFloatField": "FloatPointField",
    "TrieDoubleField": "DoublePointField", "TrieDateField": "DatePointField", "CurrencyField": "CurrencyFieldType",
    "EnumField": "EnumFieldType",
}
NEEDS_MODULE = {  # classes Solr 9 moved into modules that must be enabled with SOLR_MODULES
    "ICUCollationField": "analysis-extras", "ICUFoldingFilterFactory": "analysis-extras",
    "ICUTokenizerFactory": "analysis-extras", "ICUNormalizer2FilterFactory": "analysis-extras",
    "XSLTResponseWriter": "scripting", "ScriptUpdateProcessorFactory": "scripting",
    "ExtractingRequestHandler": "extraction", "LTRQParserPlugin": "ltr",
}
GONE_ANALYSIS = {"StandardFilterFactory", "EnglishPorterFilterFactory"}  # not in Lucene 9
# Common field properties (FieldProperties) and what each simple class accepts on top of them; any other
# attribute makes Solr fail with "invalid arguments" (e.g. precisionStep left on a Point field).
COMMON_ARGS = {
    "name", "class", "indexed", "tokenized", "stored", "binary", "omitNorms", "omitTermFreqAndPositions",
    "termVectors", "termPositions", "termOffsets", "multiValued", "sortMissingFirst", "sortMissingLast",
    "required", "omitPositions", "storeOffsetsWithPositions", "docValues", "termPayloads",
    "useDocValuesAsStored", "large", "uninvertible", "positionIncrementGap", "docValuesFormat", "postingsFormat",
}
CLASS_ARGS = {
    "TextField": {"autoGeneratePhraseQueries", "enableGraphQueries", "synonymQueryStyle"},
    "SortableTextField": {"autoGeneratePhraseQueries", "enableGraphQueries", "synonymQueryStyle",
                          "maxCharsForDocValues"},
    "TrieIntField": {"precisionStep"}, "TrieLongField": {"precisionStep"}, "TrieFloatField": {"precisionStep"},
    "TrieDoubleField": {"precisionStep"}, "TrieDateField": {"precisionStep"},
    **{cls: set() for cls in ("StrField", "BoolField", "IntPointField", "LongPointField", "FloatPointField",
                              "DoublePointField", "DatePointField", "BinaryField", "RandomSortField", "UUIDField")},
}
RESOURCE_ATTRS = ("words", "synonyms", "protected", "articles", "dictionary", "tags", "userDictionary",
                  "mapping", "currencyConfig", "stemdict", "hyphenator", "encoder")


def short_class(cls, packages=("org.apache.solr.schema.",)):
    if cls.startswith("solr."):
        return cls[5:]
    for package in packages:
        if cls.startswith(package):
            return cls[len(package):]
    return None


def check_class(cls, known, where):
    short = short_class(cls)
    module = NEEDS_MODULE.get(short or "")
    if module and module not in (os.environ.get("SOLR_MODULES") or PROPS.get("solr.modules") or "").split(","):
        raise SolrError(500, f"{where}: Error loading class '{cls}' (Solr 9 ships it in the '{module}' module: "
                             f"enable it with SOLR_MODULES={module})")
    if not module and (short is None or short not in known):
        raise SolrError(500, f"{where}: Error loading class '{cls}'")
    return short


def check_resources(el, conf_dir, where):
    for attr in RESOURCE_ATTRS:
        for name in filter(None, (el.get(attr) or "").split(",")):
            if not (conf_dir / name.strip()).is_file():
                raise SolrError(500, f"{where}: Can't find resource '{name.strip()}' in classpath or '{conf_dir}'")


def truthy(value):
    return str(value).lower() in ("true", "t", "1", "on", "yes")


class FieldType:
    def __init__(self, el, conf_dir, schema_file):
        self.name, cls = el.get("name"), el.get("class", "")
        where = f'Plugin init failure for [{schema_file}] fieldType "{self.name}"'
        self.cls = check_class(cls, set(KINDS) | OPAQUE, where)
        if self.cls in DEPRECATED:
            log.once(("deprecated", self.cls), f"Solr 9 deprecates {cls} (fieldType {self.name}): use "
                                               f"solr.{DEPRECATED[self.cls]}; Solr 10 no longer has it")
        allowed = CLASS_ARGS.get(self.cls)
        extra = sorted(set(el.attrib) - COMMON_ARGS - allowed) if allowed is not None else []
        if extra:
            raise SolrError(500, f"{where}: schema fieldtype {self.name}(org.apache.solr.schema.{self.cls}) "
                                 f"invalid arguments:{{{', '.join(f'{k}={el.get(k)}' for k in extra)}}}")
        check_resources(el, conf_dir, where)
        self.kind, self.attrs = KINDS.get(self.cls, "other"), dict(el.attrib)
        self.keyword = self.whitespace = self.lowercase = False
        self.ngram = None
        analyzers = el.findall("analyzer")
        for analyzer in analyzers:
            for part in analyzer:
                cls = part.get("class", "")
                short = (short_class(cls, ("org.apache.lucene.analysis.",)) or "").rsplit(".", 1)[-1]
                if short in GONE_ANALYSIS or (part.tag == "filter" and part.get("name") in ("standard", "englishPorter")):
                    raise SolrError(500, f"{where}: Error loading class '{cls or part.get('name')}'")
                if short in NEEDS_MODULE:
                    check_class(cls, set(), where)
                check_resources(part, conf_dir, where)
        index = next((a for a in analyzers if a.get("type") in (None, "index")), None)
        for part in index if index is not None else []:
            comp = (part.get("class") or part.get("name") or "").rsplit(".", 1)[-1].lower()
            self.keyword |= part.tag == "tokenizer" and comp.startswith("keyword")
            self.whitespace |= part.tag == "tokenizer" and comp.startswith("whitespace")
            self.lowercase |= comp.startswith("lowercase")
            if comp.startswith(("edgengram", "ngram")):
                self.ngram = (int(part.get("minGramSize", 1)), int(part.get("maxGramSize", 2)), comp.startswith("edge"))

    def analyze(self, value, query=False):
        """Text analysis of the stand-in: lowercase alphanumeric runs (no stemming, no stop words)."""
        if self.keyword:
            tokens = [value.lower() if self.lowercase else value]
        elif self.whitespace:
            tokens = [t.lower() if self.lowercase else t for t in value.split()]
        else:
            tokens = re.findall(r"[^\W_]+", value.lower())
        if self.ngram and not query:
            low, high, edge = self.ngram
            tokens = [t[i:i + n] for t in tokens for i in (range(1) if edge else range(len(t)))
                      for n in range(low, high + 1) if i + n <= len(t)]
        return tokens


class Field:
    def __init__(self, el, ftype):
        self.name, self.type = el.get("name"), ftype

        def prop(name, default=False):
            value = el.get(name, ftype.attrs.get(name))
            return default if value is None else truthy(value)
        self.indexed, self.stored, self.multi = prop("indexed", True), prop("stored", True), prop("multiValued")
        self.required, self.docvalues, self.default = prop("required"), prop("docValues"), el.get("default")
        # fl=* returns stored fields, and docValues fields whose useDocValuesAsStored is on (the default)
        self.returned = self.stored or (self.docvalues and prop("useDocValuesAsStored", True))

    def convert(self, raw, doc_id):
        """A value as Solr would index it; errors as Solr words them."""
        kind = self.type.kind
        value = raw if isinstance(raw, str) else json.dumps(raw) if not isinstance(raw, bool) else str(raw).lower()
        try:
            if kind == "bool":
                return "true" if truthy(value) else "false"
            if kind == "int":
                return int(value)
            if kind == "float":
                return float(value)
            if kind == "date":
                return parse_date(value)
        except ValueError as exc:
            raise bad(f"ERROR: [doc={doc_id}] Error adding field '{self.name}'='{value}' msg={exc}")
        return value

    def terms(self, value):
        return self.type.analyze(value) if self.type.kind == "text" else [value]


DATE_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?Z$")


def parse_date(value):
    if re.match(r"NOW|.*[+/-](SECOND|MINUTE|HOUR|DAY|MONTH|YEAR)", value):
        raise not_implemented("date math (NOW, +1DAY, /DAY ...)")
    m = DATE_RE.match(value.strip())
    if not m:
        raise ValueError(f"Invalid Date String:'{value}'")
    datetime.datetime(*map(int, m.groups()[:6]))  # validates the calendar
    millis = (m.group(7) or ".000")[1:4].ljust(3, "0")
    return value.strip()[:19] + f".{millis}Z"  # fixed width: sorts and compares as a string


def output(field, value):
    if field.type.kind == "date":
        return value.replace(".000Z", "Z")
    if field.type.kind == "bool":
        return value == "true"
    return value


class Schema:
    def __init__(self, path, conf_dir):
        root = parse_xml(path, "schema")
        name = path.name
        if root.tag != "schema":
            raise SolrError(500, f"Can't load schema {path}: schema has no <schema> root element")
        self.name, self.version = root.get("name"), root.get("version")
        self.types = {}
        for el in [*root.iter("fieldType"), *root.iter("fieldtype")]:
            if el.get("name") in self.types:
                raise SolrError(500, f"[{name}] Duplicate fieldType definition for '{el.get('name')}'")
            self.types[el.get("name")] = FieldType(el, conf_dir, name)
        self.fields, self.dynamic = {}, []
        for el in root.iter("field"):
            if el.get("name") in self.fields:
                raise SolrError(500, f"[{name}] Duplicate field definition for '{el.get('name')}'")
            self.fields[el.get("name")] = Field(el, self._type(el, name))
        for el in root.iter("dynamicField"):
            pattern = el.get("name", "")
            if not (pattern.startswith("*") or pattern.endswith("*")):
                raise SolrError(500, f"[{name}] Dynamic field name '{pattern}' should have either a leading or a "
                                     f"trailing asterisk, and no others.")
            self.dynamic.append((pattern, Field(el, self._type(el, name))))
        self.dynamic.sort(key=lambda item: -len(item[0]))  # Solr tries longer patterns first
        self.unique_key = (root.findtext("uniqueKey") or "").strip() or None
        if self.unique_key and self.unique_key not in self.fields:
            raise SolrError(500, f"[{name}] Schema uniqueKey '{self.unique_key}' is not an explicit field")
        self.copy_fields = []
        for el in root.iter("copyField"):
            source, dest = el.get("source", ""), el.get("dest", "")
            if self.field(dest) is None:
                raise SolrError(500, f"copyField dest :'{dest}' is not an explicit field and doesn't match a "
                                     f"dynamicField.")
            if "*" not in source and self.field(source) is None:
                raise SolrError(500, f"copyField source :'{source}' is not a glob and doesn't match any explicit "
                                     f"field or dynamicField.")
            self.copy_fields.append((source, dest))

    def _type(self, el, schema_file):
        if el.get("type") not in self.types:
            raise SolrError(500, f"[{schema_file}] Unknown fieldType '{el.get('type')}' specified on field "
                                 f"{el.get('name')}")
        return self.types[el.get("type")]

    def field(self, name):
        if name in self.fields:
            return self.fields[name]
        for pattern, field in self.dynamic:
            if fnmatch.fnmatchcase(name, pattern):
                field = copy.copy(field)
                field.name = name
                return field
        return None


class SolrConfig:
    """The parts of solrconfig.xml that matter here: classes Solr 9 removed, resources, the schema factory,
    /select defaults, autoSoftCommit, whether an update log (hence _version_) is configured."""

    REMOVED = {
        "FastLRUCache": "removed in Solr 9: use solr.CaffeineCache", "LRUCache": "removed in Solr 9: use "
        "solr.CaffeineCache", "LFUCache": "removed in Solr 9: use solr.CaffeineCache",
        "search.LRUCache": "removed in Solr 9: use solr.CaffeineCache",
        "search.FastLRUCache": "removed in Solr 9: use solr.CaffeineCache",
        "VelocityResponseWriter": "removed in Solr 9 (an independent project now)",
        "DataImportHandler": "removed in Solr 9 (an independent project now)",
        "LegacyBM25SimilarityFactory": "removed in Solr 9",
    }

    def __init__(self, path, conf_dir):
        root = parse_xml(path, "solr config")
        for el in root.iter():
            cls = el.get("class", "")
            short = short_class(cls, ("org.apache.solr.search.", "org.apache.solr.response."))
            if short in self.REMOVED and el.get("startup") != "lazy":
                raise SolrError(500, f"Error loading class '{cls}' ({self.REMOVED[short]})")
            if short in NEEDS_MODULE and el.get("startup") != "lazy":
                check_class(cls, set(), f"<{el.tag} name=\"{el.get('name')}\">")
            if el.tag == "searchComponent" and short == "QueryElevationComponent":
                config_file = el.findtext("str[@name='config-file']")
                if config_file and not (conf_dir / config_file).is_file():
                    raise SolrError(500, f"Error initializing QueryElevationComponent: Can't find resource "
                                         f"'{config_file}' in classpath or '{conf_dir}'")
        factory = root.find("schemaFactory")
        self.classic = factory is not None and (factory.get("class") or "").endswith("ClassicIndexSchemaFactory")
        self.update_log = root.find("updateHandler/updateLog") is not None
        soft = subst(root.findtext("updateHandler/autoSoftCommit/maxTime") or "-1").strip()
        self.soft_commit_ms = int(soft) if soft.lstrip("-").isdigit() else -1
        self.select_defaults = {}
        for init in root.iter("initParams"):
            if any(p.strip() in ("/select", "/**") for p in (init.get("path") or "").split(",")):
                self.select_defaults.update(self._params(init.find("lst[@name='defaults']")))
        for handler in root.iter("requestHandler"):
            if handler.get("name") == "/select":
                self.select_defaults.update(self._params(handler.find("lst[@name='defaults']")))

    @staticmethod
    def _params(lst):
        return {} if lst is None else {el.get("name"): subst(el.text).strip() for el in lst}


# --- cores ---------------------------------------------------------------------------------------

def read_properties(path):
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and line[0] not in "#!":
            key, _, value = line.partition("=") if "=" in line else line.partition(":")
            props[key.strip()] = value.strip().replace("\\:", ":").replace("\\=", "=").replace("\\\\", "\\")
    return props


class Core:
    def __init__(self, container, name, instance_dir, props):
        self.container, self.name, self.instance_dir, self.props = container, name, Path(instance_dir), props
        if props.get("configSet"):
            base = container.configset_base / props["configSet"]
            if not base.is_dir():
                raise SolrError(500, f"Could not load configuration from directory {base}")
            self.conf_dir = base / "conf"
        else:
            self.conf_dir = self.instance_dir / "conf"
        data_home = PROPS.get("solr.data.home")
        if props.get("dataDir"):
            self.data_dir = self.instance_dir / props["dataDir"]
        elif data_home:
            self.data_dir = Path(data_home) / self.instance_dir.name / "data"
        else:
            self.data_dir = self.instance_dir / "data"
        self.index_file = self.data_dir / "index" / "standin-docs.json"
        self.started = time.time()
        self.load_config()
        self.index_file.parent.mkdir(parents=True, exist_ok=True)
        self.docs, self.version = {}, 0
        if self.index_file.exists():
            try:
                for stored in json.loads(self.index_file.read_text())["docs"]:
                    self.docs[self._key(stored)] = self._record(stored)
            except (ValueError, KeyError, TypeError) as exc:
                raise SolrError(500, f"Error opening new searcher: cannot read {self.index_file}: {exc!r}")
        self.visible = dict(self.docs)
        self.soft_due = None

    def load_config(self):
        """(Re)reads solrconfig.xml and the schema; raises without touching the running core."""
        config_name, schema_name = self.props.get("config", "solrconfig.xml"), self.props.get("schema")
        try:
            config = SolrConfig(self.conf_dir / config_name, self.conf_dir)
        except SolrError as exc:
            raise SolrError(500, f"Could not load conf for core {self.name}: Error loading solr config from "
                                 f"{self.conf_dir / config_name}: {exc.msg}")
        if schema_name:
            candidates = [schema_name]
        elif config.classic:
            candidates = ["schema.xml"]
        else:
            candidates = ["managed-schema.xml", "managed-schema", "schema.xml"]
        path = next((self.conf_dir / c for c in candidates if (self.conf_dir / c).is_file()), None)
        if path is None:
            raise SolrError(500, f"Could not load conf for core {self.name}: Can't find resource "
                                 f"'{candidates[0]}' in classpath or '{self.conf_dir}'")
        try:
            schema = Schema(path, self.conf_dir)
        except SolrError as exc:
            raise SolrError(500, f"Could not load conf for core {self.name}: Can't load schema {path}: {exc.msg}")
        if config.update_log and "_version_" not in schema.fields:
            raise SolrError(500, f"Could not load conf for core {self.name}: Unable to use updateLog: _version_ "
                                 f"field must exist in schema and be searchable (indexed or docValues) and "
                                 f"retrievable(stored or docValues) and not multiValued")
        if path.name == "schema.xml" and not config.classic and not schema_name:
            # ManagedIndexSchemaFactory (Solr's default) upgrades schema.xml to managed-schema.xml
            shutil.copyfile(path, self.conf_dir / "managed-schema.xml")
            path.rename(path.with_name("schema.xml.bak"))
            log("INFO", f"Upgraded to managed schema at {self.conf_dir / 'managed-schema.xml'}", self.name)
            path = self.conf_dir / "managed-schema.xml"
        self.config, self.schema, self.schema_path = config, schema, path

    def reload(self):
        self.load_config()
        self.docs = {key: self._record(rec["stored"]) for key, rec in self.docs.items()}
        self.visible = {key: self.docs[key] for key in self.visible if key in self.docs}
        self.started = time.time()

    # documents: a record holds the values as indexed ("stored") and the terms of each field ("terms")
    def _key(self, stored):
        return stored[self.schema.unique_key][0] if self.schema.unique_key else id(stored)

    def _record(self, stored):
        terms = {}
        for name, values in stored.items():
            field = self.schema.field(name)
            if field is not None and (field.indexed or field.docvalues):
                terms[name] = [field.terms(v) for v in values]
        return {"stored": stored, "terms": terms}

    def add(self, raw, overwrite=True):
        key_name = self.schema.unique_key
        doc_id = raw.get(key_name, "(null)") if key_name else "(null)"
        if isinstance(doc_id, list):
            doc_id = doc_id[0] if doc_id else "(null)"
        if key_name and (raw.get(key_name) in (None, "", [])):
            raise bad(f"Document is missing mandatory uniqueKey field: {key_name}")
        stored = {}
        for name, value in raw.items():
            field = self.schema.field(name)
            if field is None:
                raise bad(f"ERROR: [doc={doc_id}] unknown field '{name}'")
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, dict) for v in values):
                raise not_implemented("atomic updates and nested documents")
            values = [field.convert(v, doc_id) for v in values if v is not None]
            if values:
                stored.setdefault(name, []).extend(values)
        for source, dest in self.schema.copy_fields:
            dest_field = self.schema.field(dest)
            for name in [n for n in raw if fnmatch.fnmatchcase(n, source) and n != dest]:
                values = raw[name] if isinstance(raw[name], list) else [raw[name]]
                stored.setdefault(dest, []).extend(dest_field.convert(v, doc_id) for v in values if v is not None)
        for name, field in self.schema.fields.items():
            if name not in stored and field.default is not None:
                stored[name] = [field.convert(field.default, doc_id)]
            if field.required and name not in stored:
                raise bad(f"ERROR: [doc={doc_id}] missing required field: {name}")
        for name, values in stored.items():
            field = self.schema.field(name)
            if len(values) > 1 and not field.multi:
                raise bad(f"ERROR: [doc={doc_id}] multiple values encountered for non multiValued field {name}: "
                          f"{values}")
        if "_version_" in self.schema.fields:
            self.version = max(self.version + 1, int(time.time() * 1000) << 20)
            stored["_version_"] = [self.version]
        key = self._key(stored)
        if not overwrite and key in self.docs:
            raise not_implemented("overwrite=false (duplicate unique keys)")
        self.docs.pop(key, None)  # an updated document moves to the end, as in Lucene
        self.docs[key] = self._record(stored)
        return key

    def delete_ids(self, ids):
        for doc_id in ids:
            self.docs.pop(doc_id, None)

    def delete_query(self, q, params):
        matched = Searcher(self, self.docs, params.get("q.op")).run_query(q, params.get("df"))
        self.delete_ids(list(matched))

    def commit(self, soft=False, open_searcher=True):
        if open_searcher:
            self.visible, self.soft_due = dict(self.docs), None
        if not soft:
            self.index_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.index_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"format": "solr-standin-1", "docs": [r["stored"] for r in self.docs.values()]}))
            tmp.replace(self.index_file)

    def commit_within(self, millis):
        due = time.time() + max(millis, 0) / 1000
        self.soft_due = due if self.soft_due is None else min(self.soft_due, due)

    def tick(self):
        if self.soft_due is not None and time.time() >= self.soft_due:
            self.commit(soft=True)

    def status(self, with_index=True):
        info = {"name": self.name, "instanceDir": str(self.instance_dir), "dataDir": str(self.data_dir) + "/",
                "config": self.props.get("config", "solrconfig.xml"), "schema": self.schema_path.name,
                "startTime": datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "uptime": int((time.time() - self.started) * 1000)}
        if with_index:
            size = self.index_file.stat().st_size if self.index_file.exists() else 0
            info["index"] = {"numDocs": len(self.visible), "maxDoc": len(self.visible), "deletedDocs": 0,
                             "version": self.version, "segmentCount": 1 if self.visible else 0, "current": True,
                             "hasDeletions": False, "directory": str(self.index_file.parent),
                             "sizeInBytes": size, "size": f"{size / 1024:.2f} KB"}
        return info


class Container:
    """The cores of SOLR_HOME: discovered from core.properties files, created, reloaded, unloaded."""

    def __init__(self, solr_home, solr_xml):
        self.home, self.cores, self.failures, self.lock = solr_home, {}, {}, threading.RLock()
        self.descriptors = {}
        cfg = {el.get("name"): subst(el.text).strip() for el in solr_xml if el.get("name")}
        self.core_root = (solr_home / cfg["coreRootDirectory"]) if cfg.get("coreRootDirectory") else solr_home
        self.configset_base = solr_home / cfg.get("configSetBaseDir", "configsets")
        self.allowed = [solr_home, self.core_root] + [Path(p) for p in (PROPS.get("solr.data.home"),) if p] + \
            [Path(p) for p in (PROPS.get("solr.allowPaths") or "").split(",") if p]

    def discover(self):
        for dirpath, dirnames, filenames in os.walk(self.core_root, followlinks=True):
            if "core.properties" in filenames:
                dirnames.clear()
                props = read_properties(Path(dirpath) / "core.properties")
                name = props.get("name") or Path(dirpath).name
                self.descriptors[name] = (Path(dirpath), props)
                try:
                    self._load(name)
                except SolrError:
                    pass
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))

    def _load(self, name):
        instance_dir, props = self.descriptors[name]
        try:
            self.cores[name] = Core(self, name, instance_dir, props)
            self.failures.pop(name, None)
            log("INFO", f"core '{name}' loaded from {instance_dir} (schema {self.cores[name].schema_path.name}, "
                        f"{len(self.cores[name].visible)} documents)", name)
        except (SolrError, OSError) as exc:  # OSError: e.g. a data directory the server's user cannot write
            msg = exc.msg if isinstance(exc, SolrError) else f"{type(exc).__name__}: {exc}"
            self.failures[name] = f"org.apache.solr.common.SolrException: {msg}"
            log("ERROR", f"Unable to create core [{name}] Caused by: {msg}", name)
            raise SolrError(500, msg) from None

    def core(self, name):
        if name in self.cores:
            self.cores[name].tick()
            return self.cores[name]
        if name in self.failures:
            raise SolrError(500, f"SolrCore '{name}' is not available due to init failure: {self.failures[name]}")
        raise SolrError(404, f"Solr has no core named '{name}' (HTTP 404 Not Found)")

    def create(self, params):
        name = params.get("name")
        if not name:
            raise bad("Missing required parameter: name")
        if name in self.cores:
            raise bad(f"Core with name '{name}' already exists.")
        instance_dir = Path(params.get("instanceDir") or name)
        instance_dir = instance_dir if instance_dir.is_absolute() else self.core_root / instance_dir
        instance_dir = Path(os.path.normpath(instance_dir))
        if not any(instance_dir == a or a in instance_dir.parents for a in self.allowed):
            raise bad(f"Error CREATEing SolrCore '{name}': Path {instance_dir} must be relative to SOLR_HOME, "
                      f"SOLR_DATA_HOME coreRootDirectory. Set system property 'solr.allowPaths' to add other "
                      f"allowed paths.")
        if (instance_dir / "core.properties").exists():
            raise bad(f"Error CREATEing SolrCore '{name}': Could not create a new core in {instance_dir} as "
                      f"another core is already defined there")
        props = {"name": name}
        for key in ("configSet", "config", "schema", "dataDir"):
            if params.get(key):
                props[key] = params[key]
        props.update({k[9:]: v for k, v in params.items() if k.startswith("property.")})
        self.descriptors[name] = (instance_dir, props)
        try:
            self._load(name)
        except SolrError as exc:
            self.descriptors.pop(name)
            self.failures.pop(name, None)
            raise bad(f"Error CREATEing SolrCore '{name}': Unable to create core [{name}] Caused by: {exc.msg}")
        instance_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
        (instance_dir / "core.properties").write_text(
            "#Written by CorePropertiesLocator\n#" + stamp + "\n" +
            "".join(f"{k}={v}\n" for k, v in props.items()))
        return name

    def reload(self, name):
        if name in self.failures and name not in self.cores:
            try:
                return self._load(name)
            except SolrError as exc:
                raise SolrError(500, f"Error handling 'RELOAD' action: Unable to reload core [{name}] "
                                     f"Caused by: {exc.msg}")
        core = self.core(name)
        try:
            core.reload()
        except SolrError as exc:  # the running core keeps its previous configuration, as in Solr
            log("ERROR", f"Unable to reload core [{name}] Caused by: {exc.msg}", name)
            raise SolrError(500, f"Error handling 'RELOAD' action: Unable to reload core [{name}] "
                                 f"Caused by: {exc.msg}")
        log("INFO", f"core reloaded (schema {core.schema_path.name})", name)

    def unload(self, name, params):
        if name not in self.cores and name not in self.failures:
            raise bad(f"Cannot unload non-existent core [{name}]")
        core = self.cores.pop(name, None)
        self.failures.pop(name, None)
        instance_dir, _ = self.descriptors.pop(name)
        if core and not truthy(params.get("deleteIndex", "false")):
            core.commit()
        if (instance_dir / "core.properties").exists():
            (instance_dir / "core.properties").rename(instance_dir / "core.properties.unloaded")
        if truthy(params.get("deleteInstanceDir", "false")):
            shutil.rmtree(instance_dir, ignore_errors=True)
        elif core and truthy(params.get("deleteDataDir", "false")):
            shutil.rmtree(core.data_dir, ignore_errors=True)
        elif core and truthy(params.get("deleteIndex", "false")):
            shutil.rmtree(core.index_file.parent, ignore_errors=True)

    def close(self):
        with self.lock:
            for core in self.cores.values():  # Solr commits on close (commitOnClose defaults to true)
                core.commit()


# --- queries -------------------------------------------------------------------------------------

MUST, SHOULD, MUST_NOT = "MUST", "SHOULD", "MUST_NOT"


class Parser:
    """The Lucene query syntax subset haystack generates: terms, field:term, "phrases", AND OR NOT && || ! + -,
    (groups), field:(groups), *:*, field:*, wildcards (* ?), [ranges TO *] and {exclusive ranges}, ^boosts."""

    SPECIAL = set(' \t\r\n()[]{}"^~:')

    def __init__(self, text, default_op):
        self.s, self.i, self.and_op = text, 0, (default_op or "OR").upper() == "AND"

    def parse(self, df):
        node = self.query(df, top=True)
        if self.i < len(self.s):
            raise self.error(f"Encountered \"{self.s[self.i]}\"")
        return node

    def error(self, what):
        return bad(f"org.apache.solr.search.SyntaxError: Cannot parse '{self.s}': {what} at position {self.i}")

    def ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def word(self, *words):
        for w in words:
            end = self.i + len(w)
            if self.s.startswith(w, self.i) and (w in ("&&", "||") or end == len(self.s) or
                                                 self.s[end].isspace() or self.s[end] in '("'):
                self.i = end
                return w
        return None

    def query(self, field, top=False):
        clauses, conj = [], None
        while True:
            self.ws()
            if self.i >= len(self.s) or (self.s[self.i] == ")" and not top):
                break
            if self.s[self.i] == ")":
                raise self.error('Encountered " ")" "')
            op = self.word("AND", "&&", "OR", "||")
            if op:
                conj = "AND" if op in ("AND", "&&") else "OR"
                continue
            mods = None
            if self.word("NOT") or self.s.startswith("!", self.i) and self.skip(1):
                mods = "NOT"
            elif self.s[self.i] in "+-":
                mods = "REQ" if self.s[self.i] == "+" else "NOT"
                self.i += 1
            node = self.clause(field)
            if node is not None:
                self.add(clauses, conj, mods, node)
            conj = None
        return ("bool", clauses)

    def skip(self, n):
        self.i += n
        return True

    def add(self, clauses, conj, mods, node):
        # org.apache.lucene.queryparser.classic.QueryParserBase#addClause
        if clauses and conj == "AND" and clauses[-1][0] != MUST_NOT:
            clauses[-1][0] = MUST
        if clauses and self.and_op and conj == "OR" and clauses[-1][0] != MUST_NOT:
            clauses[-1][0] = SHOULD
        prohibited = mods == "NOT"
        if not self.and_op:
            required = mods == "REQ" or (conj == "AND" and not prohibited)
        else:
            required = not prohibited and conj != "OR"
        clauses.append([MUST_NOT if prohibited else MUST if required else SHOULD, node])

    def clause(self, field):
        self.ws()
        start = self.i
        if self.i < len(self.s) and self.s[self.i] not in self.SPECIAL:
            name, _ = self.term_text()
            if self.i < len(self.s) and self.s[self.i] == ":" and name:
                self.i += 1
                field = name
            else:
                self.i = start
        if self.i >= len(self.s):
            raise self.error("Encountered \"<EOF>\"")
        c = self.s[self.i]
        if c == "(":
            self.i += 1
            node = self.query(field)
            if self.i >= len(self.s) or self.s[self.i] != ")":
                raise self.error("Encountered \"<EOF>\", expected \")\"")
            self.i += 1
        elif c == '"':
            end = self.i + 1
            while end < len(self.s) and self.s[end] != '"':
                end += 2 if self.s[end] == "\\" else 1
            if end >= len(self.s):
                raise self.error("Lexical error: unterminated phrase")
            text = re.sub(r"\\(.)", r"\1", self.s[self.i + 1:end])
            self.i = end + 1
            if self.s.startswith("~", self.i):
                raise not_implemented("phrase slop (\"...\"~N)")
            node = ("phrase", field, text)
        elif c in "[{":
            node = self.range(field)
        elif c == "/":
            raise not_implemented("regular expression queries (/.../)")
        else:
            text, wild = self.term_text()
            if not text:
                raise self.error(f'Encountered "{c}"')
            if self.s.startswith("~", self.i):
                raise not_implemented("fuzzy queries (term~)")
            node = ("term", field, text, wild)
        if self.s.startswith("^", self.i):
            m = re.compile(r"\^(=?)(\d+(?:\.\d+)?)").match(self.s, self.i)
            if not m or m.group(1):
                raise not_implemented("constant-score boosts (^=)") if m else self.error("bad boost")
            self.i = m.end()
            node = ("boost", float(m.group(2)), node)
        return node

    def term_text(self):
        """Reads a term; returns (unescaped text, wildcard regex or None)."""
        out, pattern, wild = [], [], False
        while self.i < len(self.s) and self.s[self.i] not in self.SPECIAL:
            c = self.s[self.i]
            if c == "\\" and self.i + 1 < len(self.s):
                c = self.s[self.i + 1]
                self.i += 2
                out.append(c)
                pattern.append(re.escape(c))
                continue
            self.i += 1
            out.append(c)
            if c in "*?":
                wild = True
                pattern.append(".*" if c == "*" else ".")
            else:
                pattern.append(re.escape(c))
        return "".join(out), ("".join(pattern) if wild else None)

    def range(self, field):
        m = re.compile(r'([\[{])\s*("(?:[^"\\]|\\.)*"|[^\s\]}]+)\s+TO\s+("(?:[^"\\]|\\.)*"|[^\s\]}]+)\s*([\]}])').match(
            self.s, self.i)
        if not m:
            raise self.error("Encountered a malformed range")
        self.i = m.end()

        def bound(b):
            return None if b == "*" else re.sub(r"\\(.)", r"\1", b[1:-1] if b.startswith('"') else b)
        return ("range", field, bound(m.group(2)), bound(m.group(3)), m.group(1) == "[", m.group(4) == "]")


class Searcher:
    """Evaluates parsed queries over a set of document records; a score is a small TF*IDF."""

    def __init__(self, core, docs, op=None):
        self.core, self.schema, self.docs, self.op = core, core.schema, docs, op or "OR"

    def run_query(self, q, df):
        if q.startswith("{!"):
            raise not_implemented("local parameters and other query parsers ({!...})")
        return self.eval(Parser(q, self.op).parse(df)) or {}

    def field(self, name):
        if name is None:
            raise bad("no field name specified in query and no default specified via 'df' param")
        field = self.schema.field(name)
        if field is None:
            raise bad(f"undefined field {name}")
        if not (field.indexed or field.docvalues):
            raise bad(f"can not search on field {name}: it is neither indexed nor has docValues")
        return field

    def eval(self, node):
        kind = node[0]
        if kind == "bool":
            return self.eval_bool(node[1])
        if kind == "boost":
            inner = self.eval(node[2])
            return None if inner is None else {k: v * node[1] for k, v in inner.items()}
        if kind == "term" and node[1] == "*" and node[2] == "*":
            return {k: 1.0 for k in self.docs}
        field = self.field(node[1])
        if kind == "term" and node[3] == ".*":  # field:* matches documents with a value
            return {k: 1.0 for k, r in self.docs.items() if r["terms"].get(field.name)}
        if kind == "term" and node[3]:
            if field.type.kind not in ("text", "str", "other"):
                raise not_implemented(f"wildcard queries on {field.type.cls} fields")
            regex = re.compile(node[3].lower() if field.type.kind == "text" else node[3], re.S)
            return self.match(field, lambda toks: any(regex.fullmatch(t) for t in toks), score=False)
        if kind == "range":
            return self.range(field, *node[2:])
        text = node[2]
        if field.type.kind != "text":
            value = self.query_value(field, text)
            return self.match(field, lambda toks: toks.count(value))
        tokens = field.type.analyze(text, query=True)
        if not tokens:
            return None
        if kind == "phrase" and len(tokens) > 1:
            return self.match(field, lambda toks: sum(toks[i:i + len(tokens)] == tokens for i in range(len(toks))))
        if len(tokens) == 1:
            return self.match(field, lambda toks: toks.count(tokens[0]))
        occur = MUST if self.op.upper() == "AND" else SHOULD  # several tokens from one term: q.op applies
        return self.eval_bool([[occur, ("term", field.name, t, None)] for t in tokens])

    def query_value(self, field, text):
        try:
            return field.convert(text, "query")
        except SolrError:
            if field.type.kind == "date":
                raise bad(f"Invalid Date String:'{text}'")
            raise bad(f"Invalid Number: {text}" if field.type.kind in ("int", "float") else f"Invalid value: {text}")

    def match(self, field, count, score=True):
        hits = {}
        for key, record in self.docs.items():
            tf = sum(count(toks) for toks in record["terms"].get(field.name, []))
            if tf:
                hits[key] = math.sqrt(tf)
        if score:
            n = len(self.docs)
            idf = math.log(1 + (n - len(hits) + 0.5) / (len(hits) + 0.5))
            return {k: v * idf for k, v in hits.items()}
        return {k: 1.0 for k in hits}

    def range(self, field, low, high, low_inc, high_inc):
        kind = field.type.kind
        if kind == "other":
            raise not_implemented(f"range queries on {field.type.cls} fields")
        if kind == "text":
            low, high = (b.lower() if b is not None else None for b in (low, high))
        elif kind != "str":
            low, high = (self.query_value(field, b) if b is not None else None for b in (low, high))

        def inside(v):
            return ((low is None or v > low or (low_inc and v == low)) and
                    (high is None or v < high or (high_inc and v == high)))
        return self.match(field, lambda toks: any(inside(t) for t in toks), score=False)

    def eval_bool(self, clauses):
        parts = [(occur, self.eval(node)) for occur, node in clauses]
        parts = [(occur, hits) for occur, hits in parts if hits is not None]
        must = [h for o, h in parts if o == MUST]
        should = [h for o, h in parts if o == SHOULD]
        must_not = [h for o, h in parts if o == MUST_NOT]
        if not parts:
            return {}
        if must:
            keys = set.intersection(*(set(h) for h in must))
        elif should:
            keys = set().union(*should)
        else:  # a purely negative query matches everything else, as Solr makes it
            keys = set(self.docs)
        for hits in must_not:
            keys -= set(hits)
        return {k: sum(h.get(k, 0.0) for h in must + should) or 1.0 for k in keys}


def search(core, params):
    """/select: q, q.op, df, fq, fl, start, rows, sort, facets; highlighting and spellcheck answer empty."""
    for key in ("stats", "group", "debugQuery", "debug", "cursorMark", "mlt", "terms", "tv", "expand",
                "json.facet", "facet.range", "facet.date", "facet.pivot", "facet.interval", "facet.heatmap",
                "rq", "json"):
        if key in params and (key not in ("stats", "group", "mlt", "terms", "tv", "expand") or
                              truthy(params.get(key))):
            raise not_implemented(f"the '{key}' parameter")
    if params.get("defType", "lucene") != "lucene":
        raise not_implemented(f"defType={params['defType']} (only the standard lucene query parser)")
    if params.get("wt", "json") != "json":
        raise not_implemented(f"wt={params['wt']} (only JSON responses)")
    if params.get("json.nl", "flat") != "flat":
        raise not_implemented(f"json.nl={params['json.nl']}")
    q = params.get("q")
    if not q:
        raise not_implemented("a request without q (q.alt)")
    searcher, df = Searcher(core, core.visible, params.get("q.op")), params.get("df")
    hits = searcher.run_query(q, df)
    for fq in params.getall("fq"):
        keep = searcher.run_query(fq, df)
        hits = {k: v for k, v in hits.items() if k in keep}
    position = {k: i for i, k in enumerate(core.visible)}
    keys = sorted(hits, key=position.get)
    for spec in reversed(split_sort(params.get("sort") or "score desc")):
        name, direction = spec
        if name == "score":
            keys.sort(key=lambda k: hits[k], reverse=direction == "desc")
            continue
        if name == "_docid_":
            keys.sort(key=position.get, reverse=direction == "desc")
            continue
        field = searcher.field(name) if "(" not in name else None
        if field is None:
            raise not_implemented(f"sorting by functions ({name})")
        if field.multi:
            raise bad(f"can not sort on multivalued field: {name}")
        if field.type.kind == "text" and field.type.cls != "SortableTextField":
            raise bad(f"can not sort on a field w/o docValues unless it is indexed=true uninvertible=true and the "
                      f"type supports Uninversion: {name}")
        present = [k for k in keys if core.visible[k]["stored"].get(name)]
        missing = [k for k in keys if not core.visible[k]["stored"].get(name)]
        present.sort(key=lambda k: core.visible[k]["stored"][name][0], reverse=direction == "desc")
        keys = present + missing
    start, rows = int(params.get("start") or 0), int(params.get("rows") or 10)
    if start < 0 or rows < 0:
        raise bad("'start' and 'rows' parameters may not be negative")
    fl = [f for f in re.split(r"[,\s]+", params.get("fl") or "*") if f]
    for f in fl:
        if not re.fullmatch(r"[\w.*?-]+", f):
            raise not_implemented(f"fl entries other than field names, globs and score ('{f}')")
    docs = []
    for key in keys[start:start + rows]:
        doc = {}
        for name, values in core.visible[key]["stored"].items():
            field = core.schema.field(name)
            if field is not None and field.returned and any(fnmatch.fnmatchcase(name, f) for f in fl if f != "score"):
                out = [output(field, v) for v in values]
                doc[name] = out if field.multi else out[0]
        if "score" in fl:
            doc["score"] = round(hits[key], 6)
        docs.append(doc)
    result = {"numFound": len(keys), "start": start, "numFoundExact": True, "docs": docs}
    if "score" in fl:
        result["maxScore"] = round(max(hits.values()), 6) if hits else 0.0
    answer = {"response": result}
    notices = []
    if truthy(params.get("facet", "false")):
        answer["facet_counts"] = facets(core, searcher, set(keys), params, df)
    if truthy(params.get("hl", "false")):
        answer["highlighting"] = {str(d.get(core.schema.unique_key)): {} for d in docs}
        notices.append("highlighting is not implemented: the section is empty")
    if truthy(params.get("spellcheck", "false")):
        answer["spellcheck"] = {"suggestions": [], "correctlySpelled": bool(keys), "collations": []}
        notices.append("spellcheck is not implemented: no suggestions")
    if notices:
        answer["standin"] = {"notice": NOTICE, "notImplemented": notices}
    return answer


def split_sort(sort):
    specs = []
    for part in filter(None, (p.strip() for p in sort.split(","))):
        bits = part.rsplit(None, 1)
        if len(bits) != 2 or bits[1].lower() not in ("asc", "desc"):
            raise bad(f"Can't determine a Sort Order (asc or desc) in sort spec '{part}'")
        specs.append((bits[0], bits[1].lower()))
    return specs


def facets(core, searcher, keys, params, df):
    fields = {}
    for name in params.getall("facet.field"):
        if name.startswith("{!"):
            raise not_implemented("local parameters in facet.field")
        searcher.field(name)  # an undefined field is an error

        def opt(key, default, name=name):
            return params.get(f"f.{name}.facet.{key}", params.get(f"facet.{key}", default))
        counts = {}
        for key in keys:
            for value in {t for toks in core.visible[key]["terms"].get(name, []) for t in toks}:
                counts[value] = counts.get(value, 0) + 1
        mincount, limit = int(opt("mincount", 0)), int(opt("limit", 100))
        prefix = opt("prefix", "")
        if mincount == 0:  # Solr lists every term of the field, with zero counts
            for record in core.visible.values():
                for toks in record["terms"].get(name, []):
                    for value in toks:
                        counts.setdefault(value, 0)
        items = [(v, c) for v, c in counts.items() if c >= mincount and str(v).startswith(prefix)]
        if opt("sort", "count" if limit > 0 else "index") in ("count", "true"):
            items.sort(key=lambda vc: (-vc[1], vc[0]))
        else:
            items.sort()
        if limit >= 0:
            items = items[int(opt("offset", 0)):int(opt("offset", 0)) + limit]
        fields[name] = [x for v, c in items for x in (str(v).replace(".000Z", "Z"), c)]
    queries = {fq: len(keys & set(searcher.run_query(fq, df)))
               for fq in params.getall("facet.query")}
    return {"facet_queries": queries, "facet_fields": fields, "facet_ranges": {}, "facet_intervals": {},
            "facet_heatmaps": {}}


# --- updates -------------------------------------------------------------------------------------

def pairs_hook(pairs):
    return pairs  # keeps repeated keys ("add": ..., "add": ...) of Solr's JSON command format


def as_dict(value):
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return {k: as_dict(v) for k, v in value}
    if isinstance(value, list):
        return [as_dict(v) for v in value]
    return value


def update(core, params, body, content_type, path):
    """/update, /update/json, /update/json/docs: JSON (docs, or commands) and XML, with commit parameters."""
    summary = {"add": [], "delete": [], "deleteByQuery": [], "commit": False, "optimize": False}
    overwrite = truthy(params.get("overwrite", "true"))
    commit_within = int(params.get("commitWithin") or -1)
    ctype = content_type.split(";")[0].strip().lower()
    body_text = body.decode("utf-8") if body else ""
    is_json = path.startswith("update/json") or (path == "update" and ctype in ("application/json", "text/json"))
    is_xml = path == "update/xml" or (path == "update" and ctype in ("text/xml", "application/xml"))
    if not body_text.strip():
        pass
    elif is_json:
        if any(k in params for k in ("split", "f", "srcField", "mapUniqueKeyOnly")):
            raise not_implemented("/update/json/docs transformation parameters (split, f, ...)")
        try:
            data = json.loads(body_text or "[]", object_pairs_hook=pairs_hook)
        except json.JSONDecodeError as exc:
            raise bad(f"Cannot parse provided JSON: {exc}")
        docs_only = path.startswith("update/json/docs")
        if isinstance(data, list) and data and isinstance(data[0], tuple) and not docs_only:
            for command, arg in data:
                json_command(core, command, as_dict(arg), params, summary, overwrite, commit_within)
        else:
            data = as_dict(data)
            for doc in data if isinstance(data, list) else [data]:
                summary["add"].append(core.add(doc, overwrite))
    elif is_xml:
        try:
            root = ET.fromstring(body_text)
        except ET.ParseError as exc:
            raise bad(f"Unexpected XML in update request: {exc}")
        for el in ([root] if root.tag != "update" else list(root)):
            xml_command(core, el, params, summary, overwrite, commit_within)
    elif not ctype:
        raise bad("Missing ContentType")
    else:
        raise not_implemented(f"update bodies of type '{ctype}' (JSON and XML only; no CSV, no javabin)")
    if truthy(params.get("optimize", "false")):
        summary["optimize"] = True
    if truthy(params.get("commit", "false")) or summary["commit"] or summary["optimize"]:
        core.commit(open_searcher=truthy(params.get("openSearcher", "true")))
        summary["commit"] = True
    elif truthy(params.get("softCommit", "false")):
        core.commit(soft=True)
        summary["commit"] = "soft"
    elif summary["add"] or summary["delete"] or summary["deleteByQuery"]:
        if commit_within >= 0:
            core.commit_within(commit_within)
        elif core.config.soft_commit_ms > 0:
            core.commit_within(core.config.soft_commit_ms)
    return summary


def json_command(core, command, arg, params, summary, overwrite, commit_within):
    if command == "add":
        if not isinstance(arg, dict) or not isinstance(arg.get("doc"), dict):
            raise bad("Expected a document in \"add\": {\"doc\": {...}}")
        if "boost" in arg:
            log.once("boost", "Ignoring document boost: index-time boosts are not supported anymore", core.name)
        summary["add"].append(core.add(arg["doc"], truthy(arg.get("overwrite", overwrite))))
        if "commitWithin" in arg:
            core.commit_within(int(arg["commitWithin"]))
    elif command == "delete":
        for item in arg if isinstance(arg, list) else [arg]:
            if isinstance(item, dict) and "query" in item:
                core.delete_query(item["query"], params)
                summary["deleteByQuery"].append(item["query"])
            else:
                doc_id = item.get("id") if isinstance(item, dict) else item
                core.delete_ids([str(doc_id)])
                summary["delete"].append(str(doc_id))
    elif command in ("commit", "optimize"):
        summary["commit"] = True
        summary["optimize"] |= command == "optimize"
    else:
        raise not_implemented(f"the JSON update command '{command}'")


def xml_command(core, el, params, summary, overwrite, commit_within):
    if el.tag == "add":
        for doc_el in el.findall("doc"):
            if doc_el.get("boost"):
                log.once("boost", "Ignoring document boost: index-time boosts are not supported anymore", core.name)
            doc = {}
            for field_el in doc_el:
                if field_el.tag == "doc":
                    raise not_implemented("nested child documents")
                if field_el.get("update"):
                    raise not_implemented("atomic updates (update=\"...\")")
                if field_el.get("boost"):
                    log.once("boost", "Ignoring field boost: index-time boosts are not supported anymore", core.name)
                if field_el.get("null") == "true":
                    continue
                doc.setdefault(field_el.get("name"), []).append(field_el.text or "")
            doc = {k: v if len(v) > 1 else v[0] for k, v in doc.items()}
            summary["add"].append(core.add(doc, truthy(el.get("overwrite", overwrite))))
        if el.get("commitWithin"):
            core.commit_within(int(el.get("commitWithin")))
    elif el.tag == "delete":
        for child in el:
            if child.tag == "id":
                core.delete_ids([(child.text or "").strip()])
                summary["delete"].append((child.text or "").strip())
            elif child.tag == "query":
                core.delete_query((child.text or "").strip(), params)
                summary["deleteByQuery"].append((child.text or "").strip())
    elif el.tag in ("commit", "optimize"):
        summary["commit"] = True
        summary["optimize"] |= el.tag == "optimize"
    else:
        raise not_implemented(f"the XML update command <{el.tag}>")


# --- HTTP ----------------------------------------------------------------------------------------

class Params(dict):
    """Request parameters: the first value by get(), every value by getall()."""

    def __init__(self, multi, defaults=None):
        super().__init__({k: v[0] for k, v in multi.items()})
        self.multi = dict(multi)
        for key, value in (defaults or {}).items():
            if key not in self.multi:
                self[key], self.multi[key] = value, [value]

    def getall(self, key):
        return self.multi.get(key, [])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"SolrStandin/{VERSION}"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def handle_request(self):
        started = time.time()
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type") or ""
        multi = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if ctype.startswith("application/x-www-form-urlencoded"):
            for key, values in urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                multi.setdefault(key, []).extend(values)
            body = b""
        path = url.path.rstrip("/")
        core_name, status, extra = None, 0, ""
        try:
            with self.server.container.lock:
                answer, core_name, extra = route(self.server.container, path, multi, body, ctype)
        except SolrError as exc:
            status, answer = exc.code, {"error": {"metadata": ["error-class", "org.apache.solr.common.SolrException",
                                                              "root-error-class", "org.apache.solr.common.SolrException"],
                                                  "msg": exc.msg, "code": exc.code}}
            log("ERROR" if exc.code >= 500 else "WARN", f"{path}: {exc.msg}", core_name)
        except Exception as exc:  # a bug in the stand-in: say so, with the trace
            status, answer = 500, {"error": {"msg": f"Solr stand-in internal error: {exc!r}",
                                             "trace": traceback.format_exc(), "code": 500}}
            log("ERROR", f"{path}: {traceback.format_exc()}", core_name)
        qtime = int((time.time() - started) * 1000)
        payload = {"responseHeader": {"status": status, "QTime": qtime}}
        if multi and not status:
            payload["responseHeader"]["params"] = {k: v if len(v) > 1 else v[0] for k, v in multi.items()}
        payload.update(answer)
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status or 200)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        params = "&".join(f"{k}={v}" for k, vs in multi.items() for v in vs)
        log("INFO", f"webapp=/solr path={path[5:] if path.startswith('/solr') else path} params={{{params}}}"
                    f"{extra} status={status} QTime={qtime}", core_name, "o.a.s.c.S.Request")


def route(container, path, multi, body, ctype):
    """Returns (answer, core name, log suffix)."""
    parts = path.split("/")[1:]
    if parts[:1] != ["solr"] or len(parts) < 2:
        raise not_implemented(f"the path {path or '/'} (no admin UI, no v2 API)")
    if parts[1:] == ["admin", "info", "system"]:
        return info_system(container), None, ""
    if parts[1:] == ["admin", "cores"]:
        return core_admin(container, Params(multi)), multi.get("core", multi.get("name", [None]))[0], ""
    if parts[1] == "admin":
        raise not_implemented(f"the admin handler {path}")
    name, handler = parts[1], "/".join(parts[2:])
    core = container.core(name)
    if handler in ("select", "query"):
        answer = search(core, Params(multi, core.config.select_defaults))
        return answer, name, f" hits={answer['response']['numFound']}"
    if handler in ("update", "update/json", "update/json/docs", "update/xml"):
        s = update(core, Params(multi), body, ctype, handler)
        extra = (f" {{add={s['add'][:10]}{'...' if len(s['add']) > 10 else ''}, delete={s['delete']}, "
                 f"deleteByQuery={s['deleteByQuery']}, commit={s['commit']}, optimize={s['optimize']}}} "
                 f"[stand-in: body {ctype or '-'}, {len(body)} bytes]")
        return {}, name, extra
    if handler == "admin/ping":
        Searcher(core, core.visible).run_query("*:*", None)
        return {"status": "OK"}, name, ""
    raise not_implemented(f"the request handler /{handler} of core '{name}'")


def core_admin(container, params):
    action = (params.get("action") or "STATUS").upper()
    if action == "STATUS":
        names = [params["core"]] if params.get("core") else sorted(set(container.cores) | set(container.failures))
        with_index = truthy(params.get("indexInfo", "true"))
        return {"initFailures": dict(container.failures),
                "status": {n: container.cores[n].status(with_index) if n in container.cores else {} for n in names}}
    if action == "CREATE":
        name = container.create(params)
        return {"core": name}
    if action == "RELOAD":
        container.reload(params.get("core") or "")
        return {}
    if action == "UNLOAD":
        container.unload(params.get("core") or "", params)
        return {}
    raise not_implemented(f"the core admin action {action}")


def info_system(container):
    heap = PROPS.get("-Xmx")
    return {
        "mode": "std", "host": socket.gethostname(), "zkHost": None, "solr_home": str(container.home),
        "core_root": str(container.core_root),
        "lucene": {"solr-spec-version": VERSION, "solr-impl-version": f"{VERSION} (Solr stand-in, {NOTICE})",
                   "lucene-spec-version": LUCENE, "lucene-impl-version": LUCENE},
        "jvm": {"version": f"none: the stand-in runs on Python {sys.version.split()[0]}", "name": "Python",
                "memory": {"raw": {"max": heap_bytes(heap) if heap else None}}},
        "system": {"name": os.uname().sysname, "version": os.uname().release},
        "standin": {"isStandin": True, "notice": NOTICE, "heap": heap, "jettyHost": PROPS.get("solr.jetty.host"),
                    "port": PROPS.get("jetty.port")},
    }


def heap_bytes(text):
    m = re.fullmatch(r"(\d+)([kKmMgGtT]?)", text or "")
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())


# --- the server and the command line -------------------------------------------------------------

def serve(args):
    """The server: -Dkey=value system properties as bin/solr passes them to Java."""
    for arg in args:
        if arg.startswith("-D"):
            key, _, value = arg[2:].partition("=")
            PROPS[key] = value
        elif arg.startswith(("-Xmx", "-Xms")):
            try:
                heap_bytes(arg[4:])
            except ValueError:
                print(f"Invalid {'maximum' if arg.startswith('-Xmx') else 'initial'} heap size: {arg}\n"
                      f"Error: Could not create the Java Virtual Machine.", file=sys.stderr)
                return 1
            PROPS[arg[:4]] = arg[4:]
    port, host = int(PROPS.get("jetty.port", "8983")), PROPS.get("solr.jetty.host", "127.0.0.1")
    home = Path(PROPS.get("solr.solr.home") or TIP / "server" / "solr")
    logs = Path(PROPS.get("solr.log.dir") or TIP / "server" / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    log.file = open(logs / "solr.log", "a")
    log("INFO", f"Solr stand-in {VERSION} starting ({NOTICE}): port={port} host={host} solr_home={home} "
                f"heap={PROPS.get('-Xmx', 'default')} (accepted; a stand-in has no JVM heap) python={sys.executable}")
    ignored = sorted(k for k in os.environ if k.startswith("SOLR_") and k not in (
        "SOLR_PORT", "SOLR_JETTY_HOST", "SOLR_HOME", "SOLR_DATA_HOME", "SOLR_LOGS_DIR", "SOLR_PID_DIR", "SOLR_HEAP",
        "SOLR_JAVA_MEM", "SOLR_INCLUDE", "SOLR_TIP", "SOLR_OPTS", "SOLR_SOLRXML_REQUIRED", "SOLR_STANDIN_PYTHON",
        "SOLR_MODULES", "SOLR_STOP_WAIT", "SOLR_START_WAIT", "SOLR_JAVA_HOME", "SOLR_SERVER_DIR"))
    if ignored:
        log("INFO", f"settings accepted but without effect in the stand-in: {', '.join(ignored)}")
    solr_xml = home / "solr.xml"
    if not solr_xml.is_file():
        if truthy(PROPS.get("solr.solrxml.required", "false")):
            log("ERROR", f"solr.xml does not exist in {home} cannot start Solr")
            return 1
        log("INFO", "solr.xml not found in SOLR_HOME, using built-in default")
        solr_xml = TIP / "server" / "solr" / "solr.xml"
    try:
        container = Container(home, parse_xml(solr_xml, "solr.xml"))
    except SolrError as exc:
        log("ERROR", f"Could not load SOLR configuration: {exc.msg}")
        return 1
    try:
        ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        log("ERROR", f"Failed to start the HTTP listener on {host}:{port}: {exc}")
        return 1
    server.daemon_threads = True
    server.container = container
    container.discover()  # a core that fails to load is listed in initFailures; the node starts anyway

    def stop(signum, _frame):
        log("INFO", f"Received signal {signum}: shutting down (committing open cores)")
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("INFO", f"Started Solr stand-in on {host}:{port} with {len(container.cores)} core(s)"
                f"{' and init failures: ' + ', '.join(container.failures) if container.failures else ''}")
    server.serve_forever(poll_interval=0.2)
    container.close()
    log("INFO", "Solr stand-in stopped")
    return 0


def running_nodes():
    """(pid, port, host) of every running stand-in server, found in /proc like bin/solr finds Jetty with ps."""
    nodes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv]
        script = next((i for i, a in enumerate(argv) if a.endswith("solr_standin.py")), None)
        if script is not None and argv[script + 1:script + 2] == ["serve"]:
            props = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("-D"))
            nodes.append((int(entry.name), int(props.get("jetty.port", 8983)), props.get("solr.jetty.host", "")))
    return sorted(nodes)


def fetch_info(port, host):
    host = "localhost" if host in ("", "0.0.0.0", "::", "127.0.0.1") else host
    host = f"[{host}]" if ":" in host else host
    with urllib.request.urlopen(f"http://{host}:{port}/solr/admin/info/system?wt=json", timeout=5) as resp:
        return json.load(resp)


def cli(argv):
    """bin/solr's command line, after bin/solr has read the include file and exported SOLR_* variables."""
    env = os.environ
    if not argv or argv[0] in ("-help", "-h", "--help", "-usage"):
        print(f"Usage: solr COMMAND OPTIONS\n       where COMMAND is one of: start, stop, restart, status, version\n\n"
              f"  Solr stand-in {VERSION}: {NOTICE}.")
        return 0
    cmd, args = argv[0], argv[1:]
    if cmd in ("version", "-version", "--version", "-v"):
        print(f"Solr version is: {VERSION}")
        return 0
    if cmd in ("status", "-info", "-i"):
        nodes = running_nodes()
        if not nodes:
            print("\nNo Solr nodes are running.\n")
            return 3
        print(f"\nFound {len(nodes)} Solr nodes: ")
        for pid, port, host in nodes:
            print(f"\nSolr process {pid} running on port {port}")
            try:
                info = fetch_info(port, host)
                print(json.dumps({"solr_home": info["solr_home"], "version": info["lucene"]["solr-impl-version"],
                                  "mode": info["mode"], "standin": True}, indent=2))
            except OSError as exc:
                print(f"\nSolr at port {port} is not responding: {exc}")
        return 0
    if cmd not in ("start", "stop", "restart"):
        print(f"\nERROR: the Solr stand-in does not implement 'bin/solr {cmd}' ({NOTICE}).\n", file=sys.stderr)
        return 1
    opts = {"fg": False, "force": False, "all": False, "port": env.get("SOLR_PORT"), "dopts": []}
    i = 0
    while i < len(args):
        a = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if a in ("-f", "-foreground", "--foreground"):
            opts["fg"] = True
        elif a in ("-force", "--force"):
            opts["force"] = True
        elif a in ("-all", "--all"):
            opts["all"] = True
        elif a in ("-p", "-port", "--port", "-s", "-solr.home", "--solr-home", "-t", "-data.home", "--data-home",
                   "-m", "-memory", "--memory", "-h", "-host", "--host", "-a", "-addlopts", "-k", "-key"):
            if value is None or value.startswith("-"):
                print(f"\nERROR: a value is required with the {a} option!\n", file=sys.stderr)
                return 1
            key = {"-p": "port", "-port": "port", "--port": "port", "-s": "SOLR_HOME", "-solr.home": "SOLR_HOME",
                   "--solr-home": "SOLR_HOME", "-t": "SOLR_DATA_HOME", "-data.home": "SOLR_DATA_HOME",
                   "--data-home": "SOLR_DATA_HOME", "-m": "SOLR_HEAP", "-memory": "SOLR_HEAP",
                   "--memory": "SOLR_HEAP", "-h": "SOLR_HOST", "-host": "SOLR_HOST", "--host": "SOLR_HOST"}.get(a)
            if key == "port":
                opts["port"] = value
            elif key:
                env[key] = value
            i += 1
        elif a in ("-c", "-cloud", "--cloud", "-z", "-zkHost", "--zk-host", "-e", "-example", "--example"):
            print(f"\nERROR: the Solr stand-in does not implement {a} (SolrCloud, ZooKeeper, examples).\n",
                  file=sys.stderr)
            return 1
        elif a.startswith("-D"):
            opts["dopts"].append(a)
        elif a in ("-V", "-verbose", "--verbose", "-v", "-q"):
            pass
        else:
            print(f"\nERROR: {a} is not supported by this script\n", file=sys.stderr)
            return 1
        i += 1
    port = int(opts["port"] or 8983)
    pid_dir = Path(env.get("SOLR_PID_DIR") or TIP / "bin")
    if cmd == "stop" and not opts["port"] and not opts["all"]:  # no port given: the only node with a pid file
        pid_files = sorted(pid_dir.glob("solr-*.pid"))
        if len(pid_files) != 1:
            print(f"\nFound {len(pid_files)} Solr nodes running! Must either specify a port using -p or -all to "
                  f"stop all Solr nodes on this host.\n" if pid_files else "\nNo Solr nodes found to stop.\n")
            return 1
        port = int(pid_files[0].stem[5:])
    if cmd in ("stop", "restart"):
        code = stop(pid_dir, None if opts["all"] else port, env)
        if cmd == "stop":
            return code
    return start(port, pid_dir, opts, env)


def stop(pid_dir, port, env):
    wait = int(env.get("SOLR_STOP_WAIT") or 180)
    if port is None:  # -all: the nodes with a pid file, as bin/solr does
        targets = [(int(p.read_text().strip() or 0), p, p.stem[5:]) for p in sorted(pid_dir.glob("solr-*.pid"))]
    else:
        pid_file = pid_dir / f"solr-{port}.pid"
        pid = int(pid_file.read_text().strip() or 0) if pid_file.exists() else 0
        if not pid or not Path(f"/proc/{pid}").exists():
            pid = next((p for p, node_port, _ in running_nodes() if node_port == port), 0)
        if not pid:
            print(f"No process found for Solr node running on port {port}")
            pid_file.unlink(missing_ok=True)
            return 1
        targets = [(pid, pid_file, port)]
    for pid, pid_file, port in targets:
        print(f"Sending stop command to Solr running on port {port} ... waiting up to {wait} seconds to allow "
              f"Jetty process {pid} to stop gracefully.")
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + wait
            while time.time() < deadline and Path(f"/proc/{pid}").exists() and not zombie(pid):
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists() and not zombie(pid):
                print(f"Solr process {pid} is still running; forcefully killing process {pid}.")
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
    return 0


def zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def start(port, pid_dir, opts, env):
    if os.geteuid() == 0 and not opts["force"]:
        print("WARNING: Starting Solr as the root user is a security risk and not considered best practice. "
              "Exiting.\n         Please consult the Reference Guide. To override this check, start with "
              "argument '-force'")
        return 1
    home = env.get("SOLR_HOME") or str(TIP / "server" / "solr")
    if not home.startswith("/"):
        home = str(Path.cwd() / home) if (Path.cwd() / home).is_dir() else str(TIP / "server" / home)
    if not Path(home).exists():
        print(f"\nSolr home directory {home} not found!\n")
        return 1
    if truthy(env.get("SOLR_SOLRXML_REQUIRED", "false")) and not (Path(home) / "solr.xml").is_file():
        print(f"\nSolr home directory {home} must contain solr.xml!\n")
        return 1
    data_home = env.get("SOLR_DATA_HOME")
    if data_home and not Path(data_home).exists():
        print(f"\nSolr data home directory {data_home} not found!\n")
        return 1
    for pid, node_port, _ in running_nodes():
        if node_port == port:
            print(f"\nPort {port} is already being used by another process (pid: {pid})\n"
                  f"Please choose a different port using the -p option.\n")
            return 1
    logs = Path(env.get("SOLR_LOGS_DIR") or TIP / "server" / "logs")
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError:
        print(f"Logs directory {logs} is not writable or could not be created. Exiting")
        return 1
    heap = env.get("SOLR_HEAP")
    mem = [f"-Xms{heap}", f"-Xmx{heap}"] if heap else (env.get("SOLR_JAVA_MEM") or "-Xms512m -Xmx512m").split()
    props = [f"-Djetty.port={port}", f"-Dsolr.jetty.host={env.get('SOLR_JETTY_HOST') or '127.0.0.1'}",
             f"-Dsolr.solr.home={home}", f"-Dsolr.log.dir={logs}", f"-Dsolr.install.dir={TIP}",
             f"-Dsolr.solrxml.required={env.get('SOLR_SOLRXML_REQUIRED') or 'false'}"]
    if data_home:
        props.append(f"-Dsolr.data.home={data_home}")
    if env.get("SOLR_MODULES"):
        props.append(f"-Dsolr.modules={env['SOLR_MODULES']}")
    argv = [sys.executable, "-I", "-B", str(Path(__file__)), "serve", *mem, *props,
            *(env.get("SOLR_OPTS") or "").split(), *opts["dopts"]]
    if opts["fg"]:
        os.execv(sys.executable, argv)  # the server takes this process over (systemd's main PID)
    pid_dir.mkdir(parents=True, exist_ok=True)
    with open(logs / f"solr-{port}-console.log", "ab") as console:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (pid_dir / f"solr-{port}.pid").write_text(f"{proc.pid}\n")
    wait = int(env.get("SOLR_START_WAIT") or env.get("SOLR_STOP_WAIT") or 180)
    print(f"Waiting up to {wait} seconds to see Solr running on port {port}")
    deadline = time.time() + wait
    while time.time() < deadline:
        if proc.poll() is not None:
            print(f"\nERROR: Solr exited with status {proc.returncode}; see {logs / f'solr-{port}-console.log'}\n")
            (pid_dir / f"solr-{port}.pid").unlink(missing_ok=True)
            return 1
        try:
            fetch_info(port, env.get("SOLR_JETTY_HOST") or "127.0.0.1")
            print(f"Started Solr server on port {port} (pid={proc.pid}). Happy searching!")
            return 0
        except OSError:
            time.sleep(0.1)
    print(f"\nERROR: Solr did not start or was not reachable within {wait} seconds")
    return 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2:]))
    sys.exit(cli(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "cli" else sys.argv[1:]))
