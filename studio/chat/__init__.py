"""Chat: the router (backend by model id, retries, fallbacks), server-side replies that
outlive the page, conversation helpers and the model comparison arena. No gradio imports."""
