"""URL configuration: the back office lives at /admin/."""
from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from ops.monitoring import views as ops_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("health", ops_views.health, name="health"),
    path("metrics", ops_views.metrics, name="metrics"),
]
