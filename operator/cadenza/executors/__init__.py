"""The leader's executor pods: which pods may take runs, their dispatch tokens and their status.

``pool`` probes every pod of every Executor and answers "which pods can take a run now";
``tokens`` reads the dispatch tokens from Secrets; ``status`` reports what the pool sees in each
Executor's status subresource; ``spec`` reads an Executor's spec with the CRD's defaults.
"""
