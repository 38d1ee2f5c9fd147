"""Downstream of the change log (legifrance_changes): readers, the page's diffs, exporters."""
