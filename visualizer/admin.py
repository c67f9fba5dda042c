from django.contrib import admin

from visualizer.models import Lab


@admin.register(Lab)
class LabAdmin(admin.ModelAdmin):
    list_display = ("id", "lesson", "state", "network", "session_key", "created")
    list_filter = ("state",)
