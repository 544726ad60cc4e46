"""Operator tools for looking into running sandboxes: ps, logs, shell."""
