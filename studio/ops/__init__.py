"""Operations: the backend status strip, backups and restores, the data folder's lock
(and, to come, health and metrics). No gradio imports."""
