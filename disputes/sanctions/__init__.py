"""Sanctions screening (trust and safety): OFAC SDN lists as versions, the chains' sanctions oracles, every wallet the
mirror meets screened when first seen and again when a list changes. Models live in disputes.models."""
