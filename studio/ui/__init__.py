"""The thin Gradio layer: one module per tab."""
