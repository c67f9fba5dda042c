"""HTTP routes; WebSocket routes live in visualizer.routing, static files in core.asgi."""

from django.contrib import admin
from django.urls import path

from lessons import views

urlpatterns = [
    path("", views.home, name="home"),
    path("stage/<slug:slug>/", views.lesson_detail, name="lesson"),
    path("admin/", admin.site.urls),
]
