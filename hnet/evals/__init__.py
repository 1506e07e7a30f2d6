"""Evaluation helpers: noise perturbations, multiple-choice scoring, boundary visualisation."""
