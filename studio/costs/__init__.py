"""Costs and cloud: cost math, usage accounting, budgets, and the OpenRouter catalog.
No gradio imports."""
