"""URL configuration: the back office lives at /admin/."""
from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from ops import views as ops_views

admin.site.site_header = "Escrow operations back office"
admin.site.site_title = "Escrow back office"
admin.site.index_title = "Operations"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("health", ops_views.health, name="health"),
    path("metrics", ops_views.metrics, name="metrics"),
]
