#!/usr/bin/env python3
"""manage.py of the small Django + haystack project the Solr stand-in's tests drive (tests/test_solr_standin.py)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "standin_demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
