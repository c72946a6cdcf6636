SELECT target_name, class FROM target_classes
