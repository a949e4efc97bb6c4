"""Every module in library/ and in a role's library/ (roles/backup/library) documents what it does
(DOCUMENTATION, EXAMPLES, RETURN), ansible-doc renders it, and the options it documents (its doc
fragments' included) are exactly those its argument spec accepts, with the same types, choices,
defaults and required flags: the documentation cannot drift from the code."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from module_run import LIBRARY

ROOT = LIBRARY.parent
# A role's library/, module_utils/ and doc_fragments/ are Ansible's when the role loads (and, for
# ansible-doc, through ansible.cfg's doc_fragment_plugins).
LIBRARIES = [LIBRARY, *sorted(ROOT.glob("roles/*/library"))]
MODULE_UTILS = [ROOT / "module_utils", *sorted(ROOT.glob("roles/*/module_utils"))]
DOC_FRAGMENTS = sorted(ROOT.glob("roles/*/doc_fragments"))
MODULE_PATHS = {p.stem: p for library in LIBRARIES for p in sorted(library.glob("*.py"))}
MODULES = sorted(MODULE_PATHS)


def _load_module_utils() -> None:
    """The project's module_utils (flat files and packages) as Ansible ships them to a module:
    ansible.module_utils.<name>. No bytecode is written next to them (a role ships its files)."""
    import ansible.module_utils

    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        for directory in MODULE_UTILS:
            if str(directory) not in ansible.module_utils.__path__:
                ansible.module_utils.__path__.append(str(directory))
            for info in pkgutil.walk_packages([str(directory)], "ansible.module_utils."):
                importlib.import_module(info.name)
    finally:
        sys.dont_write_bytecode = saved


_load_module_utils()


class _Captured(Exception):
    def __init__(self, kwargs: dict):
        super().__init__("argument spec captured")
        self.kwargs = kwargs


def argument_spec_of(name: str) -> dict:
    """The keyword arguments the module's main() gives AnsibleModule (nothing runs past that)."""
    import ansible.module_utils.basic as basic

    def capture(self, *args, **kwargs):
        if args:
            kwargs["argument_spec"] = args[0]
        raise _Captured(kwargs)

    original = basic.AnsibleModule.__init__
    basic.AnsibleModule.__init__ = capture
    try:
        spec = importlib.util.spec_from_file_location(f"_docs_{name}", MODULE_PATHS[name])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        with pytest.raises(_Captured) as captured:
            mod.main()
    finally:
        basic.AnsibleModule.__init__ = original
    return captured.value.kwargs


def docs_of(name: str) -> dict[str, object]:
    spec = importlib.util.spec_from_file_location(f"_docs_text_{name}", MODULE_PATHS[name])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {part: getattr(mod, part, None) for part in ("DOCUMENTATION", "EXAMPLES", "RETURN")}


def documentation_of(name: str) -> dict:
    """The module's DOCUMENTATION with its doc fragments merged in, as ansible-doc shows it."""
    from ansible.plugins.loader import fragment_loader
    from ansible.utils.plugin_docs import add_fragments

    for directory in DOC_FRAGMENTS:
        fragment_loader.add_directory(str(directory))
    doc = yaml.safe_load(docs_of(name)["DOCUMENTATION"])
    add_fragments(doc, str(MODULE_PATHS[name]), fragment_loader=fragment_loader, is_module=True)
    return doc


def compare_options(documented: dict, spec: dict, where: str) -> list[str]:
    problems = []
    if set(documented) != set(spec):
        problems.append(f"{where}: documented {sorted(set(documented) - set(spec))} not in the argument spec; "
                        f"in the spec but not documented {sorted(set(spec) - set(documented))}")
    for key in sorted(set(documented) & set(spec)):
        doc, code = documented[key], spec[key]
        if doc.get("type", "str") != code.get("type", "str"):
            problems.append(f"{where}.{key}: type {doc.get('type', 'str')} documented, {code.get('type', 'str')} in code")
        if bool(doc.get("required", False)) != bool(code.get("required", False)):
            problems.append(f"{where}.{key}: required differs")
        if "choices" in code and list(doc.get("choices", [])) != list(code["choices"]):
            problems.append(f"{where}.{key}: choices {doc.get('choices')} documented, {code['choices']} in code")
        if "default" in code and code["default"] is not None and doc.get("default") != code["default"]:
            problems.append(f"{where}.{key}: default {doc.get('default')!r} documented, {code['default']!r} in code")
        if code.get("elements") and doc.get("elements", "str") != code["elements"]:
            problems.append(f"{where}.{key}: elements {doc.get('elements')} documented, {code['elements']} in code")
        if code.get("options") or doc.get("suboptions"):
            problems += compare_options(doc.get("suboptions") or {}, code.get("options") or {}, f"{where}.{key}")
    return problems


@pytest.mark.parametrize("name", MODULES)
def test_documentation_examples_and_return_parse(name):
    parts = docs_of(name)
    for part, text in parts.items():
        assert text and text.strip(), f"{name}: {part} is missing"
    doc = yaml.safe_load(parts["DOCUMENTATION"])
    assert doc["module"] == name and doc.get("short_description") and doc.get("description")
    assert "check_mode" in (doc.get("attributes") or {}), f"{name}: attributes.check_mode is not documented"
    examples = yaml.safe_load(parts["EXAMPLES"])
    assert isinstance(examples, list) and examples, f"{name}: EXAMPLES holds no task"
    assert any(name in task for task in examples), f"{name}: no example calls the module"
    assert isinstance(yaml.safe_load(parts["RETURN"]), dict), f"{name}: RETURN is not a mapping"


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_are_the_argument_spec(name):
    doc = documentation_of(name)
    kwargs = argument_spec_of(name)
    problems = compare_options(doc.get("options") or {}, kwargs["argument_spec"], name)
    assert not problems, "\n".join(problems)
    check_mode_support = doc["attributes"]["check_mode"]["support"]
    assert bool(kwargs.get("supports_check_mode")) == (check_mode_support != "none"), (
        f"{name}: check_mode support {check_mode_support!r} documented, supports_check_mode="
        f"{kwargs.get('supports_check_mode')} in code")


def test_ansible_doc_renders_every_module():
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    paths = {name: os.pathsep.join(map(str, dirs)) for name, dirs in
             (("library", LIBRARIES), ("module_utils", MODULE_UTILS), ("fragments", DOC_FRAGMENTS))}
    proc = subprocess.run([str(ansible_doc), "-M", paths["library"], "--json", *MODULES], capture_output=True,
                          text=True, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_MODULE_UTILS=paths["module_utils"],
                                   ANSIBLE_DOC_FRAGMENT_PLUGINS=paths["fragments"]))
    assert proc.returncode == 0, proc.stderr
    rendered = json.loads(proc.stdout)
    assert sorted(rendered) == MODULES, proc.stderr
    for name, doc in rendered.items():
        assert doc["doc"]["module"] == name and doc["examples"] and doc["return"], name
