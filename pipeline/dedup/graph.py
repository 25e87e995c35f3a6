"""Connected components over candidate edges, on the driver: memory O(edges), not O(corpus).

Only documents that appear in an edge are nodes; they are compacted to 0..k-1 with
``np.unique`` and scipy's connected_components labels them (sparse graph, linear time).
"""

from __future__ import annotations

import numpy as np


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, component label per node) for the undirected graph with edges a[i]–b[i].

    nodes: sorted unique int64 ids of every endpoint; labels: int64, equal within a component.
    """
    from scipy.sparse import coo_matrix  # imported here: see pipeline.dedup.warm_imports
    from scipy.sparse.csgraph import connected_components

    nodes = np.unique(np.concatenate([a, b])).astype(np.int64)
    if nodes.size == 0:
        return nodes, np.zeros(0, np.int64)
    ia = np.searchsorted(nodes, a)
    ib = np.searchsorted(nodes, b)
    graph = coo_matrix((np.ones(ia.size, np.int8), (ia, ib)), shape=(nodes.size, nodes.size))
    _, labels = connected_components(graph, directed=False)
    return nodes, labels.astype(np.int64)


def pick_per_component(labels: np.ndarray, nodes: np.ndarray, score: np.ndarray,
                       eligible: np.ndarray | None = None) -> np.ndarray:
    """For each node, the node its component keeps: highest score, ties → smallest node id.

    eligible (bool per node) restricts the choice (e.g. to kept documents); every component must
    hold at least one eligible node.
    """
    order_score = -score.astype(np.float64)
    if eligible is not None:
        order_score = np.where(eligible, order_score, np.inf)
    order = np.lexsort((nodes, order_score, labels))  # by label, then best score, then id
    sorted_labels = labels[order]
    first = np.concatenate([[True], sorted_labels[1:] != sorted_labels[:-1]])
    winners = nodes[order][first]
    label_values = sorted_labels[first]
    winner_of_label = np.empty(labels.max() + 1 if labels.size else 0, np.int64)
    winner_of_label[label_values] = winners
    return winner_of_label[labels]
