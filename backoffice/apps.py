"""App configs of the project package: the admin uses the back office's own site class."""
from django.contrib.admin.apps import AdminConfig


class BackofficeAdminConfig(AdminConfig):
    default_site = "backoffice.admin_site.BackofficeAdminSite"
