"""The index of the Solr STAND-IN (NOT Apache Solr; see ../../STANDIN.md): what Solr 9 refuses in a core's
solrconfig.xml and schema.xml, a core's documents, the queries and updates haystack sends. solr_standin.py
serves it over HTTP. Python 3 standard library only.
"""

import datetime
import fnmatch
import json
import math
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path


class SolrError(Exception):
    """An error answered like Solr: HTTP `code` and {"error": {"msg": ..., "code": ...}}."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code, self.msg = code, msg


def bad(msg):
    return SolrError(400, msg)


def not_implemented(what):
    return bad(f"The Solr stand-in does not implement {what} (this is a test double, not Apache Solr; see STANDIN.md)")


def parse_xml(path):
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise SolrError(500, f"Can't find resource '{Path(path).name}' in classpath or '{Path(path).parent}'")
    except ET.ParseError as exc:
        raise SolrError(500, f"Error parsing {path}: {exc}")


def truthy(value):
    return str(value).lower() in ("true", "on", "1", "yes")


# --- configuration: what Solr 9 refuses in haystack's stock (Solr 6) templates ---------------------------------

# Field type classes of Solr 9 (org.apache.solr.schema). Text, string and date fields are indexed; the others
# load (haystack's schema declares them) but cannot be filled. Any other class fails to load, as in Solr 9: e.g.
# solr.LatLonType (removed in 9.0). Trie fields still load.
KINDS = {"TextField": "text", "SortableTextField": "text", "StrField": "str", "DatePointField": "date",
         "TrieDateField": "date"}
LOADABLE = set(
    "BoolField IntPointField LongPointField FloatPointField DoublePointField TrieIntField TrieLongField TrieFloatField "
    "TrieDoubleField TrieField UUIDField EnumFieldType EnumField BinaryField RandomSortField LatLonPointSpatialField "
    "SpatialRecursivePrefixTreeFieldType RptWithGeometrySpatialField BBoxField PointType CurrencyField "
    "CurrencyFieldType DateRangeField CollationField ExternalFileField PreAnalyzedField DenseVectorField RankField "
    "NestPathField".split())
# solrconfig.xml classes that Solr 9 removed, and classes it moved into modules (which the stand-in never loads)
REMOVED = {"FastLRUCache": "use solr.CaffeineCache", "LRUCache": "use solr.CaffeineCache",
           "LFUCache": "use solr.CaffeineCache", "VelocityResponseWriter": "Velocity is not part of Solr 9"}
MODULES = {"XSLTResponseWriter": "scripting", "ExtractingRequestHandler": "extraction"}
RESOURCE_ATTRS = ("words", "synonyms", "protected", "articles", "dictionary", "tags", "userDictionary", "mapping",
                  "currencyConfig", "stemdict", "hyphenator", "encoder")


def check_solrconfig(path, conf_dir):
    root = parse_xml(path)
    for el in root.iter():
        cls = el.get("class") or ""
        short = cls.rsplit(".", 1)[-1]
        if el.get("startup") == "lazy":  # Solr loads a lazy plugin at its first request only
            continue
        if short in REMOVED:
            raise SolrError(500, f"Error loading class '{cls}' (removed in Solr 9: {REMOVED[short]})")
        if short in MODULES:
            raise SolrError(500, f"Error loading class '{cls}' (Solr 9 ships it in the '{MODULES[short]}' module)")
        config_file = el.findtext("str[@name='config-file']") if short == "QueryElevationComponent" else None
        if config_file and not (conf_dir / config_file).is_file():
            raise SolrError(500, f"Error initializing QueryElevationComponent: Can't find resource '{config_file}' "
                                 f"in classpath or '{conf_dir}'")
    factory = root.find("schemaFactory")
    if factory is None or not (factory.get("class") or "").endswith("ClassicIndexSchemaFactory"):
        raise not_implemented("the managed schema (haystack's solrconfig.xml uses ClassicIndexSchemaFactory)")


class FieldType:
    def __init__(self, el, conf_dir):
        self.name, cls = el.get("name"), el.get("class", "")
        where = f'Plugin init failure for [schema.xml] fieldType "{self.name}"'
        self.cls = cls[5:] if cls.startswith("solr.") else cls.rpartition("org.apache.solr.schema.")[2]
        if self.cls not in KINDS and self.cls not in LOADABLE:
            raise SolrError(500, f"{where}: Error loading class '{cls}'")
        for part in el.iter():  # the type's own attributes (currencyConfig) and those of its analyzers' filters
            for name in (n.strip() for attr in RESOURCE_ATTRS for n in (part.get(attr) or "").split(",") if n.strip()):
                if not (conf_dir / name).is_file():
                    raise SolrError(500, f"{where}: Can't find resource '{name}' in classpath or '{conf_dir}'")
        self.kind, self.attrs = KINDS.get(self.cls), el.attrib


class Field:
    def __init__(self, el, ftype):
        self.name, self.type = el.get("name"), ftype

        def prop(name, default):
            return truthy(el.get(name, ftype.attrs.get(name, str(default))))
        self.indexed, self.stored, self.multi = prop("indexed", True), prop("stored", True), prop("multiValued", False)

    def convert(self, value, doc_id):
        """A value as the stand-in indexes it (doc_id None: in a query); errors as Solr words them."""
        if self.type.kind is None:
            raise not_implemented(f"{self.type.cls} fields such as '{self.name}' (text, string and date fields only)")
        if self.type.kind != "date":
            return value
        m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?Z", value.strip())
        try:
            datetime.datetime(*map(int, m.groups()[:6]))  # a calendar date
        except (AttributeError, ValueError):
            msg = f"Invalid Date String:'{value}'"
            raise bad(msg if doc_id is None else f"ERROR: [doc={doc_id}] Error adding field '{self.name}'='{value}' "
                                                 f"msg={msg}") from None
        return value.strip()[:19] + "." + (m.group(7) or ".000")[1:4].ljust(3, "0") + "Z"  # sorts as a string

    def terms(self, value):
        """Text analysis of the stand-in: lowercase alphanumeric runs (no stemming, stop words or synonyms)."""
        return re.findall(r"[^\W_]+", value.lower()) if self.type.kind == "text" else [value]


class Schema:
    def __init__(self, path, conf_dir):
        root = parse_xml(path)
        if root.tag != "schema":
            raise SolrError(500, "schema has no <schema> root element")
        types = [*root.iter("fieldType"), *root.iter("fieldtype")]
        self.types = {el.get("name"): FieldType(el, conf_dir) for el in types}
        self.fields, self.dynamic = {}, []
        for el in [*root.iter("field"), *root.iter("dynamicField")]:
            if el.get("type") not in self.types:
                raise SolrError(500, f"[schema.xml] Unknown fieldType '{el.get('type')}' specified on field "
                                     f"{el.get('name')}")
            if el.tag == "field":
                self.fields[el.get("name")] = Field(el, self.types[el.get("type")])
            else:
                self.dynamic.append(el.get("name"))
        self.unique_key = (root.findtext("uniqueKey") or "").strip() or None

    def field(self, name, doc_id=None):
        if name in self.fields:
            return self.fields[name]
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.dynamic):
            raise not_implemented(f"dynamic fields ('{name}')")
        raise bad(f"ERROR: [doc={doc_id}] unknown field '{name}'" if doc_id else f"undefined field {name}")


# --- a core's documents -------------------------------------------------------------------------------------------

class Core:
    """INSTANCEDIR/conf/{solrconfig.xml,schema.xml}; the documents in INSTANCEDIR/data/index/standin-docs.json."""

    def __init__(self, name, instance_dir):
        self.name, self.instance_dir = name, Path(instance_dir)
        self.conf_dir, self.data_dir = self.instance_dir / "conf", self.instance_dir / "data"
        self.index_file = self.data_dir / "index" / "standin-docs.json"
        self.load_config()
        self.docs = {}  # unique key -> {"stored": {field: [values]}, "terms": {field: [[tokens] of each value]}}
        if self.index_file.exists():
            try:
                for stored in json.loads(self.index_file.read_text())["docs"]:
                    self.docs[stored[self.schema.unique_key][0]] = self.record(stored)
            except (ValueError, KeyError, TypeError) as exc:
                raise SolrError(500, f"Error opening new searcher: cannot read {self.index_file}: {exc!r}")
        self.index_file.parent.mkdir(parents=True, exist_ok=True)
        self.visible, self.started = dict(self.docs), time.time()  # visible: as of the last commit

    def load_config(self):
        """(Re)reads solrconfig.xml and schema.xml; raises without touching the running core."""
        try:
            check_solrconfig(self.conf_dir / "solrconfig.xml", self.conf_dir)
        except SolrError as exc:
            raise SolrError(500, f"Could not load conf for core {self.name}: Error loading solr config from "
                                 f"{self.conf_dir / 'solrconfig.xml'}: {exc.msg}")
        try:
            self.schema = Schema(self.conf_dir / "schema.xml", self.conf_dir)
        except SolrError as exc:
            raise SolrError(500, f"Could not load conf for core {self.name}: Can't load schema "
                                 f"{self.conf_dir / 'schema.xml'}: {exc.msg}")

    def reload(self):
        self.load_config()
        self.docs = {key: self.record(rec["stored"]) for key, rec in self.docs.items()}
        self.visible = {key: self.docs[key] for key in self.visible if key in self.docs}
        self.started = time.time()

    def record(self, stored):
        fields = {name: self.schema.fields.get(name) for name in stored}
        return {"stored": stored, "terms": {name: [field.terms(v) for v in stored[name]]
                                            for name, field in fields.items() if field and field.indexed}}

    def add(self, raw):
        """raw: field name -> [text values], as an XML <doc> carries them."""
        key_name = self.schema.unique_key
        doc_id = (raw.get(key_name) or ["(null)"])[0]
        if not raw.get(key_name):
            raise bad(f"Document is missing mandatory uniqueKey field: {key_name}")
        stored = {}
        for name, values in raw.items():
            field = self.schema.field(name, doc_id)
            if len(values) > 1 and not field.multi:
                raise bad(f"ERROR: [doc={doc_id}] multiple values encountered for non multiValued field {name}: "
                          f"{values}")
            stored[name] = [field.convert(v, doc_id) for v in values]
        self.docs.pop(doc_id, None)  # an updated document moves to the end, as in Lucene
        self.docs[doc_id] = self.record(stored)
        return doc_id

    def commit(self):
        self.visible = dict(self.docs)
        tmp = self.index_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": "solr-standin-2", "docs": [r["stored"] for r in self.docs.values()]}))
        tmp.replace(self.index_file)

    def status(self):
        started = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
        return {"name": self.name, "instanceDir": str(self.instance_dir), "dataDir": f"{self.data_dir}/",
                "config": "solrconfig.xml", "schema": "schema.xml",
                "startTime": started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "uptime": int((time.time() - self.started) * 1000), "index": {"numDocs": len(self.visible)}}


# --- queries ----------------------------------------------------------------------------------------------------

MUST, SHOULD, MUST_NOT = "MUST", "SHOULD", "MUST_NOT"
TOKEN = re.compile(r'\s*(\(|\)|"(?:\\.|[^"\\])*"|(?:\\.|[^\s()"\\])+)')


def unescape(text):
    return re.sub(r"\\(.)", r"\1", text)


class Parser:
    """The standard (lucene) query syntax as haystack writes it: terms, field:term, "phrases", backslash escapes,
    AND OR NOT (Lucene's precedence rules, default operator OR), ( ) and field:( ) groups, *:*."""

    def __init__(self, text):
        self.s, self.tokens, pos = text, [], 0
        while text[pos:].strip():
            m = TOKEN.match(text, pos)
            if not m:
                raise self.error(f"Lexical error at position {pos}")
            self.tokens.insert(0, m.group(1))  # the next token is the last one
            pos = m.end()

    def error(self, what):
        return bad(f"org.apache.solr.search.SyntaxError: Cannot parse '{self.s}': {what}")

    def next(self):
        if not self.tokens:
            raise self.error('Encountered "<EOF>"')
        return self.tokens.pop()

    def query(self, field=None, top=True):
        clauses, conj = [], None
        while self.tokens and self.tokens[-1] != ")":
            token = self.next()
            if token in ("AND", "OR"):
                conj = token
                continue
            negated = token == "NOT"
            node = self.clause(self.next() if negated else token, field)
            # org.apache.lucene.queryparser.classic.QueryParserBase#addClause with the default operator OR
            if clauses and conj == "AND" and clauses[-1][0] == SHOULD:
                clauses[-1][0] = MUST
            clauses.append([MUST_NOT if negated else MUST if conj == "AND" else SHOULD, node])
            conj = None
        if top and self.tokens:
            raise self.error('Encountered " ")" "')
        return ("bool", clauses)

    def clause(self, token, field):
        if token == "*:*":
            return ("all",)
        if token.startswith("{!"):
            raise not_implemented("local parameters and other query parsers ({!...})")
        if token[:1] in ("+", "-", "!") or token.startswith(("&&", "||")):
            raise not_implemented("the + - ! && || operators (haystack writes AND, OR, NOT)")
        prefix = re.fullmatch(r"((?:\\.|[^:\\])+):(.*)", token)  # field:term, field:"phrase", field:(group)
        if prefix:
            field, token = unescape(prefix.group(1)), prefix.group(2) or self.next()
        if token == "(":
            node = self.query(field, top=False)
            if self.next() != ")":
                raise self.error('Encountered "<EOF>", expected ")"')
            return node
        if token.startswith('"'):
            return ("text", field, unescape(token[1:-1]), True)
        bare = re.sub(r"\\.", "", token)  # unescaped, these start syntax haystack does not send (it escapes them)
        for chars, what in (("[]{}", "range queries"), ("*?", "wildcard queries"), ("~", "fuzzy and proximity queries"),
                            ("^", "boosts"), ("/", "regular expression queries"), (":", "this use of ':'")):
            if any(c in bare for c in chars):
                raise not_implemented(what)
        return ("text", field, unescape(token), False)


class Searcher:
    """Evaluates parsed queries over document records; a score is a small TF*IDF."""

    def __init__(self, core, docs, df=None):
        self.schema, self.docs, self.df = core.schema, docs, df

    def run(self, q):
        return self.eval(Parser(q).query()) or {}

    def field(self, name):
        if name is None:
            raise bad("no field name specified in query and no default specified via 'df' param")
        return self.schema.field(name)

    def eval(self, node):
        if node[0] == "all":
            return {key: 1.0 for key in self.docs}
        if node[0] == "bool":
            return self.eval_bool(node[1])
        _, name, text, phrase = node
        field = self.field(name or self.df)
        if field.type.kind != "text":
            value = field.convert(text, None)
            return self.match(field, lambda toks: toks.count(value))
        tokens = field.terms(text)
        if not tokens:
            return None
        if phrase and len(tokens) > 1:
            return self.match(field, lambda toks: sum(toks[i:i + len(tokens)] == tokens for i in range(len(toks))))
        if len(tokens) == 1:
            return self.match(field, lambda toks: toks.count(tokens[0]))
        # one query term, several tokens ("fox-like"): the default operator (OR) between them
        return self.eval_bool([[SHOULD, ("text", field.name, t, False)] for t in tokens])

    def match(self, field, count):
        hits = {}
        for key, record in self.docs.items():
            tf = sum(count(toks) for toks in record["terms"].get(field.name, []))
            if tf:
                hits[key] = math.sqrt(tf)
        idf = math.log(1 + (len(self.docs) - len(hits) + 0.5) / (len(hits) + 0.5))
        return {key: tf * idf for key, tf in hits.items()}

    def eval_bool(self, clauses):
        parts = [(occur, hits) for occur, hits in ((o, self.eval(n)) for o, n in clauses) if hits is not None]
        must, should = [h for o, h in parts if o == MUST], [h for o, h in parts if o == SHOULD]
        if not parts:
            return {}
        if must:
            keys = set.intersection(*(set(h) for h in must))
        elif should:
            keys = set().union(*should)
        else:  # a purely negative query matches everything else, as Solr makes it
            keys = set(self.docs)
        for hits in (h for o, h in parts if o == MUST_NOT):
            keys -= set(hits)
        return {key: sum(h.get(key, 0.0) for h in must + should) or 1.0 for key in keys}


def search(core, params):
    """/select: q, df, fq, fl, start, rows, sort, wt=json."""
    for key in ("hl", "facet", "spellcheck", "mlt", "stats", "group", "debug", "debugQuery", "cursorMark", "defType",
                "q.op", "json.facet", "expand"):
        if key in params and params[key].lower() not in ("false", "off"):
            raise not_implemented(f"the '{key}' parameter")
    if params.get("wt", "json") != "json":
        raise not_implemented(f"wt={params['wt']} (JSON responses only)")
    if not params.get("q"):
        raise not_implemented("a request without q")
    searcher = Searcher(core, core.visible, params.get("df"))
    hits = searcher.run(params["q"])
    for fq in params.getall("fq"):
        keep = searcher.run(fq)
        hits = {key: score for key, score in hits.items() if key in keep}
    position = {key: i for i, key in enumerate(core.visible)}
    keys = sorted(hits, key=position.get)
    for part in reversed([p.strip() for p in (params.get("sort") or "score desc").split(",") if p.strip()]):
        name, _, direction = part.rpartition(" ")
        if direction.lower() not in ("asc", "desc") or not name.strip():
            raise bad(f"Can't determine a Sort Order (asc or desc) in sort spec '{part}'")
        name, reverse = name.strip(), direction.lower() == "desc"
        if name == "score":
            keys.sort(key=hits.get, reverse=reverse)
            continue
        field = searcher.field(name)
        if field.multi:
            raise bad(f"can not sort on multivalued field: {name}")
        if field.type.kind not in ("str", "date"):
            raise bad(f"can not sort on a field w/o docValues unless it is indexed=true uninvertible=true and the "
                      f"type supports Uninversion: {name}")
        present = sorted((k for k in keys if name in core.visible[k]["stored"]), reverse=reverse,
                         key=lambda k: core.visible[k]["stored"][name][0])
        keys = present + [k for k in keys if name not in core.visible[k]["stored"]]  # missing values last
    start, rows = int(params.get("start") or 0), int(params.get("rows") or 10)
    if start < 0 or rows < 0:
        raise bad("'start' and 'rows' parameters may not be negative")
    fl = [f for f in re.split(r"[,\s]+", params.get("fl") or "*") if f]
    docs = []
    for key in keys[start:start + rows]:
        doc = {}
        for name, values in core.visible[key]["stored"].items():
            field = core.schema.fields.get(name)
            if field and field.stored and any(fnmatch.fnmatchcase(name, f) for f in fl if f != "score"):
                out = [v.replace(".000Z", "Z") if field.type.kind == "date" else v for v in values]
                doc[name] = out if field.multi else out[0]
        if "score" in fl:
            doc["score"] = round(hits[key], 6)
        docs.append(doc)
    result = {"numFound": len(keys), "start": start, "numFoundExact": True, "docs": docs}
    if "score" in fl:
        result["maxScore"] = round(max(hits.values()), 6) if hits else 0.0
    return {"response": result}


def update(core, params, body, ctype):
    """/update with an XML body, as pysolr sends haystack's adds, deletes, commits and optimizes."""
    summary = {"add": [], "delete": [], "deleteByQuery": [], "commit": False, "optimize": False}
    for key in ("softCommit", "commitWithin", "overwrite"):
        if key in params:
            raise not_implemented(f"the update parameter '{key}'")
    if body.strip():
        if not ctype:
            raise bad("Missing ContentType")
        if ctype.split(";")[0].strip().lower() not in ("text/xml", "application/xml"):
            raise not_implemented(f"update bodies of type '{ctype}' (XML only, as pysolr sends them for haystack)")
        try:
            root = ET.fromstring(body.decode("utf-8"))
        except ET.ParseError as exc:
            raise bad(f"Unexpected XML in update request: {exc}")
        for el in (list(root) if root.tag == "update" else [root]):
            if el.tag == "add":  # index-time boosts (boost="...") are ignored, as in Solr 9
                for doc_el in el:
                    raw = {}
                    for field_el in doc_el:
                        if field_el.tag != "field" or field_el.get("update"):
                            raise not_implemented("nested documents and atomic updates")
                        raw.setdefault(field_el.get("name"), []).append(field_el.text or "")
                    summary["add"].append(core.add(raw))
            elif el.tag == "delete":
                for child in el:
                    text = (child.text or "").strip()
                    if child.tag == "id":
                        core.docs.pop(text, None)
                        summary["delete"].append(text)
                    elif child.tag == "query":
                        for key in Searcher(core, core.docs, params.get("df")).run(text):
                            core.docs.pop(key)
                        summary["deleteByQuery"].append(text)
            elif el.tag in ("commit", "optimize"):
                summary["commit"], summary["optimize"] = True, summary["optimize"] or el.tag == "optimize"
            else:
                raise not_implemented(f"the XML update command <{el.tag}>")
    if truthy(params.get("commit", "false")) or summary["commit"]:
        core.commit()
        summary["commit"] = True
    return summary
