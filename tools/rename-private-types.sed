# Issue 15, item 4: the library's private types take the uhmm__ prefix
# (the public API's are uhmm_).  To bring a branch written before the
# rename along, apply to its sources before merging:
#   sed -i -f tools/rename-private-types.sed src/*.[ch] tests/test_itree.c
s/\<struct uhmm_itree_node\>/struct uhmm__itree_node/g
s/\<struct uhmm_itree\>/struct uhmm__itree/g
s/\<struct uhmm_mni_node\>/struct uhmm__mni_node/g
s/\<struct uhmm_msgq\>/struct uhmm__msgq/g
s/\<struct uhmm_ptable\>/struct uhmm__ptable/g
s/\<uhmm_ptable_fn\>/uhmm__ptable_fn/g
s/\<struct uhmm_selfop\>/struct uhmm__selfop/g
s/\<struct uhmm_vma\>/struct uhmm__vma/g
s/\<struct uhmm_wake_defer\>/struct uhmm__wake_defer/g
s/\<enum uhmm_mm_state\>/enum uhmm__mm_state/g
s/\<struct stage_entry\>/struct uhmm__stage_entry/g
s/\<enum kind\>/enum uhmm__entry_kind/g
