#!/usr/bin/env python
"""manage.py of the throwaway project tests/test_django_migrate.py migrates."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
