"""Role checks shared by the API viewsets; identical to the UI's rules."""
from __future__ import annotations

from rest_framework import permissions


class IsAdminRole(permissions.BasePermission):
    """Admins only (role admin or superuser)."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_admin_role)


class IsManager(permissions.BasePermission):
    """Managers and admins."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_manager)


class ReadOnlyOrAdmin(permissions.BasePermission):
    """Everybody signed in reads; admins write."""

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or request.user.is_admin_role


class ReadOnlyOrManager(permissions.BasePermission):
    """Everybody signed in reads; managers and admins write."""

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or request.user.is_manager
