"""Who may do what: users, sessions, roles, limits, audit. No gradio imports."""
