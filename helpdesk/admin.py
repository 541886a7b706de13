from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import ApiToken, User


@admin.register(User)
class ThreadlineUserAdmin(UserAdmin):
    fieldsets = UserAdmin.fieldsets + (("Threadline", {"fields": ("role", "access_all", "availability", "capacity",
                                                                  "display_name", "language")}),)
    list_display = ("username", "email", "role", "availability", "is_active")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
