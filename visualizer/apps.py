from django.apps import AppConfig


class VisualizerConfig(AppConfig):
    name = "visualizer"
    default_auto_field = "django.db.models.BigAutoField"
