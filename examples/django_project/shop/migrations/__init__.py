"""The shop's migrations (made by ``manage.py makemigrations``)."""
