"""Images: workflow templates and validation, request planning, input and output files,
and the image job service that runs on ComfyUI. No gradio imports."""
