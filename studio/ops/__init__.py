"""Operations: the backend status strip (and, to come, health, metrics and backups).
No gradio imports."""
