from django.urls import path

from visualizer.consumers import LabConsumer

websocket_urlpatterns = [
    path("ws/lab/<slug:slug>/", LabConsumer.as_asgi()),
]
