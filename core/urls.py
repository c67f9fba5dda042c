"""HTTP routes; WebSocket routes live in visualizer.routing, static files are WhiteNoise's (core.settings)."""

from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from lessons import views
from visualizer import views as lab_views
from visualizer import workshop_views as ws

urlpatterns = [
    path("", views.home, name="home"),
    path("stage/<slug:slug>/", lab_views.lesson_detail, name="lesson"),
    path("stage/<slug:slug>/edit/", views.lesson_edit, name="lesson-edit"),
    path("stage/<slug:slug>/predict/", ws.predict, name="predict"),
    path("join/", ws.join, name="join"),
    path("join/<str:code>/", ws.join, name="join-code"),
    path("workshop/live/", ws.live, name="workshop-live"),
    path("workshops/", ws.workshop_list, name="workshops"),
    path("workshops/<int:pk>/", ws.workshop_detail, name="workshop"),
    path("workshops/<int:pk>/grid/", ws.workshop_grid, name="workshop-grid"),
    path("workshops/<int:pk>/projector/", ws.workshop_projector, name="workshop-projector"),
    path("workshops/<int:pk>/qr.svg", ws.workshop_qr, name="workshop-qr"),
    path("workshops/<int:pk>/results.csv", ws.workshop_results, name="workshop-results"),
    path("watch/<uuid:lab_id>/", lab_views.lab_watch, name="lab-watch"),  # staff: one lab, read-only
    path("admin/", admin.site.urls),
    # The language switcher posts to set_language (i18n/setlang/), which remembers it in a cookie.
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
]
