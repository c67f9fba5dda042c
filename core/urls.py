"""HTTP routes; WebSocket routes live in visualizer.routing, static files are WhiteNoise's (core.settings)."""

from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from lessons import views
from visualizer import views as lab_views

urlpatterns = [
    path("", views.home, name="home"),
    path("stage/<slug:slug>/", lab_views.lesson_detail, name="lesson"),
    path("stage/<slug:slug>/edit/", views.lesson_edit, name="lesson-edit"),
    path("admin/", admin.site.urls),
    # The language switcher posts to set_language (i18n/setlang/), which remembers it in a cookie.
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
]
