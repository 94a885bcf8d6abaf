"""Prompt protocols: what each adapter is asked, derived from the ground truth with a seed."""
