from django.urls import path

from visualizer.consumers import LabConsumer
from visualizer.watchers import WatchConsumer

websocket_urlpatterns = [
    path("ws/lab/<slug:slug>/", LabConsumer.as_asgi()),
    path("ws/watch/<uuid:lab_id>/", WatchConsumer.as_asgi()),  # staff, read-only
]
