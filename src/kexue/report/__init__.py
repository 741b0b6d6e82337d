"""Reports: ``results.json`` of each experiment -> markdown sections, static HTML pages, one index.

Plot helpers live in :mod:`kexue.report.plots` (matplotlib, Agg backend); this is the only
package that imports matplotlib at module level.
"""
